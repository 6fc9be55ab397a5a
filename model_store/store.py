"""A versioned model store after Triton's model repository: ``<root>/<model>/<version>/``.

Versions are immutable integers made visible by one atomic rename; aliases (``stable``,
``candidate``) live in one small JSON file per model, replaced atomically, and remember their
history so that rollback is a pointer move.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from model_store.manifest import MANIFEST_FILE, FileEntry, Manifest

ALIASES_FILE = "aliases.json"
_LOCK_FILE = ".lock"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_GATEWAY_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


class StoreError(Exception):
    """Any store problem a user can act on; the message is one line and names the culprit."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    def __init__(self, root: str | Path, *, create: bool = False) -> None:
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise StoreError(f"model store root {str(self.root)!r} does not exist")

    # -- reading ---------------------------------------------------------------------------------

    def models(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def _model_dir(self, name: str) -> Path:
        if not _NAME_RE.match(name):
            raise StoreError(f"invalid model name {name!r}")
        path = self.root / name
        if not path.is_dir():
            raise StoreError(f"unknown model {name!r} in store {str(self.root)!r}")
        return path

    def versions(self, name: str) -> list[int]:
        # Temporary publish directories start with '.', so they are never listed.
        return sorted(int(p.name) for p in self._model_dir(name).iterdir() if p.name.isdigit())

    def version_dir(self, name: str, version: int) -> Path:
        path = self._model_dir(name) / str(int(version))
        if not path.is_dir():
            raise StoreError(f"unknown version {version} of model {name!r}")
        return path

    def manifest(self, name: str, version: int) -> Manifest:
        path = self.version_dir(name, version) / MANIFEST_FILE
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise StoreError(f"{name} v{version}: {MANIFEST_FILE} is missing") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "<root>"
            raise StoreError(f"{name} v{version}: corrupt manifest at {where}: {first['msg']}") from None

    def resolve(self, name: str, ref: str | int) -> int:
        """An alias name or a version number (as int or digits) to a published version."""
        if isinstance(ref, int) or str(ref).isdigit():
            version = int(ref)
            self.version_dir(name, version)
            return version
        aliased = self.aliases(name).get(str(ref))
        if aliased is None:
            raise StoreError(f"model {name!r} has no alias {ref!r}")
        self.version_dir(name, aliased)
        return aliased

    def _read_alias_file(self, name: str) -> dict[str, dict]:
        path = self._model_dir(name) / ALIASES_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise StoreError(f"{name}: {ALIASES_FILE} is corrupt") from None
        if not isinstance(data, dict):
            raise StoreError(f"{name}: {ALIASES_FILE} is corrupt")
        return data

    def aliases(self, name: str) -> dict[str, int]:
        return {alias: int(entry["version"]) for alias, entry in self._read_alias_file(name).items()}

    def alias_gateways(self, name: str) -> dict[str, list[str]]:
        """Aliases limited to named gateways (a staged rollout's ``candidate``) -> those gateways."""
        return {
            alias: list(entry["gateways"])
            for alias, entry in self._read_alias_file(name).items()
            if entry.get("gateways") is not None
        }

    def alias_history(self, name: str, alias: str) -> list[int]:
        """The versions the alias named, oldest first (the current one last)."""
        entry = self._read_alias_file(name).get(alias)
        return [int(v) for v in entry.get("history", [])] if entry else []

    def rollback_target(self, name: str, alias: str = "stable") -> int:
        """The version ``rollback`` would point the alias at, without moving it."""
        return _previous(name, alias, self._read_alias_file(name).get(alias))

    def verify(self, name: str, version: int) -> list[str]:
        """Problems found (empty when every file matches its recorded size and sha256)."""
        try:
            manifest = self.manifest(name, version)
        except StoreError as exc:
            return [str(exc)]
        vdir = self.version_dir(name, version)
        problems = []
        if manifest.model_file not in manifest.files:
            problems.append(f"{manifest.model_file}: not listed in the manifest")
        for fname, entry in manifest.files.items():
            path = vdir / fname
            if not path.is_file():
                problems.append(f"{fname}: missing")
            elif path.stat().st_size != entry.size:
                problems.append(f"{fname}: size {path.stat().st_size} != {entry.size}")
            elif sha256_file(path) != entry.sha256:
                problems.append(f"{fname}: sha256 mismatch")
        return problems

    # -- writing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        mdir = self.root / name
        mdir.mkdir(parents=True, exist_ok=True)
        with open(mdir / _LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield mdir
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def publish(self, manifest: Manifest, files: Mapping[str, str | Path]) -> int:
        """Copy ``files`` (name in the version dir -> source path) and publish the next version."""
        if not _NAME_RE.match(manifest.name):
            raise StoreError(f"invalid model name {manifest.name!r}")
        if manifest.model_file not in files:
            raise StoreError(f"publish needs the model file {manifest.model_file!r}")
        for fname in files:
            if "/" in fname or fname in (MANIFEST_FILE, "") or fname.startswith("."):
                raise StoreError(f"invalid file name {fname!r}")
        with self._locked(manifest.name) as mdir:
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=mdir))
            try:
                entries = {}
                for fname, src in files.items():
                    dst = tmp / fname
                    shutil.copyfile(src, dst)
                    entries[fname] = FileEntry(sha256=sha256_file(dst), size=dst.stat().st_size)
                existing = [int(p.name) for p in mdir.iterdir() if p.name.isdigit()]
                version = max(existing, default=0) + 1
                final = manifest.model_copy(update={"version": version, "files": entries})
                with open(tmp / MANIFEST_FILE, "w") as f:
                    f.write(final.model_dump_json(indent=2))
                    f.flush()
                    os.fsync(f.fileno())
                _fsync_dir(tmp)
                os.chmod(tmp, 0o755)
                os.rename(tmp, mdir / str(version))
                _fsync_dir(mdir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return version

    def staging_dir(self, name: str) -> Path:
        """An empty directory inside the model's directory (so ``install`` is one rename), never listed."""
        if not _NAME_RE.match(name):
            raise StoreError(f"invalid model name {name!r}")
        mdir = self.root / name
        mdir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".tmp-", dir=mdir))

    def install(self, name: str, version: int, staged: Path) -> None:
        """Make a version copied from another store visible under its own number, by one rename.

        ``staged`` (from ``staging_dir``) holds the manifest and files; they must verify. A version
        already present is kept as it is (versions are immutable) and ``staged`` is removed.
        """
        try:
            manifest = Manifest.model_validate_json((staged / MANIFEST_FILE).read_bytes())
        except (FileNotFoundError, ValidationError) as exc:
            shutil.rmtree(staged, ignore_errors=True)
            raise StoreError(f"{name} v{version}: staged manifest unusable: {exc}") from None
        if manifest.name != name or manifest.version != version:
            shutil.rmtree(staged, ignore_errors=True)
            raise StoreError(f"staged manifest is {manifest.name} v{manifest.version}, not {name} v{version}")
        with self._locked(name) as mdir:
            final = mdir / str(int(version))
            if final.exists():
                shutil.rmtree(staged, ignore_errors=True)
                return
            for fname in manifest.files:
                path = staged / fname
                if not path.is_file() or sha256_file(path) != manifest.files[fname].sha256:
                    shutil.rmtree(staged, ignore_errors=True)
                    raise StoreError(f"{name} v{version}: staged {fname} does not match its manifest")
            _fsync_dir(staged)
            os.chmod(staged, 0o755)
            os.rename(staged, final)
            _fsync_dir(mdir)

    def set_alias(self, name: str, alias: str, version: int, gateways: Sequence[str] | None = None) -> None:
        """``gateways`` limits the alias to those gateways of a fleet (a staged rollout); None: all."""
        if not _ALIAS_RE.match(alias):
            raise StoreError(f"invalid alias {alias!r}")
        if gateways is not None and not all(_GATEWAY_RE.match(g) for g in gateways):
            raise StoreError(f"invalid gateway id in {list(gateways)!r}")
        self.version_dir(name, version)
        with self._locked(name):
            data = self._read_alias_file(name)
            entry = data.get(alias, {"version": None, "history": []})
            if entry["version"] != version:
                entry["history"] = [*entry.get("history", []), version][-50:]
                entry["version"] = version
            if gateways is None:
                entry.pop("gateways", None)
            else:
                entry["gateways"] = sorted(set(gateways))
            data[alias] = entry
            self._write_alias_file(name, data)

    def rollback(self, name: str, alias: str = "stable") -> int:
        """Point ``alias`` back at the version it named before; returns that version."""
        with self._locked(name):
            data = self._read_alias_file(name)
            entry = data.get(alias)
            previous = _previous(name, alias, entry)
            assert entry is not None  # _previous refused a missing alias
            self.version_dir(name, previous)
            entry["history"] = entry["history"][: len(entry["history"]) - 1]
            if not entry["history"] or entry["history"][-1] != previous:
                entry["history"].append(previous)
            entry["version"] = previous
            data[alias] = entry
            self._write_alias_file(name, data)
            return previous

    def _write_alias_file(self, name: str, data: dict) -> None:
        mdir = self.root / name
        fd, tmp = tempfile.mkstemp(prefix=".aliases-", dir=mdir)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, mdir / ALIASES_FILE)


def _previous(name: str, alias: str, entry: dict | None) -> int:
    if entry is None:
        raise StoreError(f"model {name!r} has no alias {alias!r}")
    history = [v for v in entry.get("history", []) if v != entry["version"]]
    if not history:
        raise StoreError(f"{name}:{alias} has no earlier version to roll back to")
    return int(history[-1])
