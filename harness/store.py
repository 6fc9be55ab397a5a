"""Model stores to change: a copy of the seed store, and new versions published into one."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from model_store import ModelStore

SEED_STORE = Path(__file__).resolve().parents[1] / "model_store" / "seed"


def copy_store(dst: Path) -> Path:
    """The seed store, copied so that a test or bench can publish into it (temporary publish dirs are skipped)."""
    shutil.copytree(SEED_STORE, dst, ignore=shutil.ignore_patterns(".tmp-*", ".aliases-*"))
    return dst


def publish_copy(store: ModelStore, version: int | None = None, *, model_bytes: bytes | None = None,
                 name: str = "ean", **manifest_update: Any) -> int:  # fmt: skip
    """A new version with the files of ``version`` (default: the stable one), optionally with other graph bytes
    or other manifest fields (labels=..., input=...). The store hashes the files as it publishes them, so
    they match their manifest."""
    base = store.resolve(name, "stable") if version is None else version
    manifest = store.manifest(name, base)
    vdir = store.version_dir(name, base)
    files: dict[str, str | Path] = {fname: vdir / fname for fname in manifest.files}
    if model_bytes is not None:
        replacement = vdir.parent / f".fault-{time.monotonic_ns()}.onnx"
        replacement.write_bytes(model_bytes)
        files[manifest.model_file] = replacement
    try:
        return store.publish(manifest.model_copy(update={"version": None, "files": {}, **manifest_update}), files)
    finally:
        if model_bytes is not None:
            replacement.unlink()
