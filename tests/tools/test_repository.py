"""The repository speaks to its users: nothing it ships points at a document a clone does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Planning notes kept beside the repository on the developers' machines, never part of a clone.
OUTSIDE = re.compile(r"\.\./shared|\bDESIGN(\.md)?\s*§|\bDESIGN\.md\b|\bSTYLE(\.md)?\b:|\bSTYLE\.md\b")


def test_no_file_cites_a_document_outside_the_repository() -> None:
    # Tracked files and new ones git does not ignore, as the working tree has them (a file deleted
    # there is not scanned).
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    texts = [f for f in files if not f.endswith((".png", ".jpg", ".onnx", ".pt", ".npz"))  # every text file
             and (REPO / f).is_file()]  # fmt: skip
    found = [f"{f}:{n}: {line.strip()}" for f in texts if f != "tests/tools/test_repository.py"
             for n, line in enumerate((REPO / f).read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "\n".join(found)


# The README leads and the reference lives under docs/: the README stays short enough to be read to
# its end, and every page it, a page under docs/ or the deployment guide (deploy/) links to is there.
README_MAX_LINES = 450
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.M)


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def deployment_guide() -> list[Path]:
    return [REPO / "deploy" / "README.md", *sorted(p for p in (REPO / "deploy").glob("*.md") if p.name != "README.md")]


def prose(text: str) -> str:
    """Markdown without its fenced code blocks: a `# comment` in a shell block is no heading."""
    return FENCE.sub("", text)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped but for hyphens and
    underscores, spaces to hyphens; a repeated heading gets -1, -2 and so on."""
    found: set[str] = set()
    for heading in HEADING.findall(prose(path.read_text())):
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
        slug = candidate = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        n = 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(CODE_SPAN.sub("``", prose(path.read_text())))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t, flags=re.I)]  # fmt: skip


def test_readme_is_short() -> None:
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference to a page under docs/"


def test_every_relative_link_resolves() -> None:
    broken = []
    for doc in [*documents(), *deployment_guide()]:
        for target in relative_links(doc):
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            name = f"{doc.relative_to(REPO)}: ({target})"
            if not dest.exists():
                broken.append(f"{name}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{name}: no heading with that anchor in {dest.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_page_under_docs() -> None:
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(REPO / "README.md")}
    missing = [p.relative_to(REPO).as_posix() for p in documents()[1:] if p.resolve() not in linked]
    assert not missing, f"README.md's documentation index does not link {missing}"


def test_the_deployment_guide_links_each_of_its_pages() -> None:
    front, *pages = deployment_guide()
    linked = {(front.parent / t.partition("#")[0]).resolve() for t in relative_links(front)}
    missing = [p.relative_to(REPO).as_posix() for p in pages if p.resolve() not in linked]
    assert not missing, f"deploy/README.md does not link {missing}"


def test_the_link_check_sees_what_github_sees(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Reliability: the chaos bench\n\n## `fer/available`, (QoS 1)\n\n## Twice\n\n## Twice\n\n"
                    "```sh\n# not-a-heading\n```\n\nSee [a](#twice-1) and `[b](gone.md)`.\n")  # fmt: skip
    assert anchors(page) == {"reliability-the-chaos-bench", "feravailable-qos-1", "twice", "twice-1"}
    assert relative_links(page) == ["#twice-1"]
