"""The repository speaks to its users: nothing it ships points at a document a clone does not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Planning notes kept beside the repository on the developers' machines, never part of a clone.
OUTSIDE = re.compile(r"\.\./shared|\bDESIGN(\.md)?\s*§|\bDESIGN\.md\b|\bSTYLE(\.md)?\b:|\bSTYLE\.md\b")


def test_no_file_cites_a_document_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    texts = [f for f in files if not f.endswith((".png", ".jpg", ".onnx", ".pt", ".npz"))]  # every text file
    found = [f"{f}:{n}: {line.strip()}" for f in texts if f != "tests/tools/test_repository.py"
             for n, line in enumerate((REPO / f).read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "\n".join(found)
