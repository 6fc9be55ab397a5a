from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from model_store import Manifest, ModelStore, StoreError
from model_store.__main__ import main as cli
from tests.model_store.conftest import make_manifest

REPO = Path(__file__).resolve().parents[2]


def test_manifest_round_trip(store: ModelStore, model_file: Path) -> None:
    manifest = make_manifest()
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest
    version = store.publish(manifest, {"model.onnx": model_file})
    loaded = store.manifest("ean", version)
    assert loaded.version == version == 1
    assert loaded.labels == manifest.labels
    assert loaded.files["model.onnx"].size == model_file.stat().st_size


def test_versions_increase_and_are_immutable_dirs(store: ModelStore, model_file: Path) -> None:
    assert [store.publish(make_manifest(), {"model.onnx": model_file}) for _ in range(3)] == [1, 2, 3]
    assert store.versions("ean") == [1, 2, 3]
    assert store.models() == ["ean"]


def _publish_many(root: str, src: str, n: int, out: multiprocessing.Queue) -> None:
    s = ModelStore(root)
    out.put([s.publish(make_manifest(), {"model.onnx": src}) for _ in range(n)])


def test_concurrent_publishers_never_share_a_version(store: ModelStore, model_file: Path) -> None:
    store.publish(make_manifest(), {"model.onnx": model_file})  # the model dir exists for all
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_publish_many, args=(str(store.root), str(model_file), 5, queue))
             for _ in range(4)]
    for p in procs:
        p.start()
    got = sorted(v for _ in procs for v in queue.get(timeout=60))
    for p in procs:
        p.join()
    assert got == list(range(2, 22))
    assert store.versions("ean") == list(range(1, 22))


def test_crash_midway_leaves_no_visible_version(store: ModelStore, model_file: Path, monkeypatch) -> None:
    store.publish(make_manifest(), {"model.onnx": model_file})

    def boom(*_a, **_k):
        raise OSError("disk died mid-publish")

    monkeypatch.setattr("model_store.store.os.rename", boom)
    with pytest.raises(OSError):
        store.publish(make_manifest(), {"model.onnx": model_file})
    monkeypatch.undo()
    assert store.versions("ean") == [1]
    assert not [p for p in (store.root / "ean").iterdir() if p.name.startswith(".tmp-")]


def test_killed_publisher_leaves_only_an_invisible_temp_dir(store: ModelStore, model_file: Path) -> None:
    # A SIGKILL cannot run cleanup: the half-written directory must still stay invisible.
    code = (
        "import os, sys; from model_store import store as s\n"
        "from tests.model_store.conftest import make_manifest\n"
        "s.os.rename = lambda *a: os._exit(9)\n"
        f"s.ModelStore({str(store.root)!r}).publish(make_manifest(), {{'model.onnx': {str(model_file)!r}}})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True)
    assert proc.returncode == 9
    assert store.versions("ean") == []
    assert [p.name for p in (store.root / "ean").iterdir() if p.name.startswith(".tmp-")]
    assert store.publish(make_manifest(), {"model.onnx": model_file}) == 1


def test_verify_catches_a_flipped_byte_and_truncation(store: ModelStore, model_file: Path) -> None:
    version = store.publish(make_manifest(), {"model.onnx": model_file})
    assert store.verify("ean", version) == []
    path = store.version_dir("ean", version) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    assert store.verify("ean", version) == ["model.onnx: sha256 mismatch"]
    path.write_bytes(bytes(data[:-5]))
    assert "size" in store.verify("ean", version)[0]
    path.unlink()
    assert store.verify("ean", version) == ["model.onnx: missing"]


def test_aliases_promote_and_rollback(store: ModelStore, model_file: Path) -> None:
    for _ in range(3):
        store.publish(make_manifest(), {"model.onnx": model_file})
    store.set_alias("ean", "stable", 1)
    store.set_alias("ean", "stable", 3)
    store.set_alias("ean", "candidate", 2)
    assert store.aliases("ean") == {"stable": 3, "candidate": 2}
    assert store.resolve("ean", "stable") == 3
    assert store.rollback("ean", "stable") == 1
    assert store.resolve("ean", "stable") == 1
    with pytest.raises(StoreError, match="no earlier version"):
        store.rollback("ean", "stable")
    assert json.loads((store.root / "ean" / "aliases.json").read_text())["candidate"]["version"] == 2


@pytest.mark.parametrize(
    ("setup", "call", "message"),
    [
        (None, lambda s: s.versions("nope"), "unknown model 'nope'"),
        (None, lambda s: s.version_dir("ean", 7), "unknown version 7"),
        (None, lambda s: s.resolve("ean", "beta"), "no alias 'beta'"),
        (None, lambda s: s.set_alias("ean", "Bad Alias", 1), "invalid alias"),
        ("corrupt", lambda s: s.manifest("ean", 1), "corrupt manifest"),
        ("aliases", lambda s: s.aliases("ean"), "aliases.json is corrupt"),
    ],
)
def test_bad_references_raise_store_errors(store, model_file, setup, call, message) -> None:
    store.publish(make_manifest(), {"model.onnx": model_file})
    if setup == "corrupt":
        (store.version_dir("ean", 1) / "manifest.json").write_text('{"name": 3}')
    elif setup == "aliases":
        (store.root / "ean" / "aliases.json").write_text("{not json")
    with pytest.raises(StoreError, match=message):
        call(store)


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        ModelStore(tmp_path / "absent")


def test_publish_rejects_bad_file_names(store: ModelStore, model_file: Path) -> None:
    with pytest.raises(StoreError, match="model file"):
        store.publish(make_manifest(), {"other.onnx": model_file})
    with pytest.raises(StoreError, match="invalid file name"):
        store.publish(make_manifest(), {"model.onnx": model_file, "../escape": model_file})


def test_cli_list_show_promote_rollback_verify(store: ModelStore, capsys) -> None:
    root = str(store.root)
    # promote and rollback load the graph (where onnxruntime is installed), so this one is real.
    seed = ModelStore(Path(__file__).resolve().parents[2] / "model_store" / "seed")
    graph = seed.version_dir("ean", 1) / "model.onnx"
    manifest = make_manifest().model_copy(update={"labels": seed.manifest("ean", 1).labels})
    for _ in range(2):
        store.publish(manifest, {"model.onnx": graph})
    assert cli(["--root", root, "promote", "ean", "1"]) == 0
    assert cli(["--root", root, "promote", "ean", "2"]) == 0
    assert cli(["--root", root, "list"]) == 0
    out = capsys.readouterr().out
    assert "ean\tv2" in out and "stable" in out
    # Each version's accuracy says which figure it is: the shipped seed's v1 has only its flip TTA one.
    assert cli(["--root", str(seed.root), "list"]) == 0
    rows = {line.split("\t")[1]: line.split("\t")[2] for line in capsys.readouterr().out.splitlines()}
    assert rows["v1"].startswith("flip_tta=0.64") and rows["v2"] == "served=0.6612", rows
    assert cli(["--root", root, "show", "ean", "stable"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert cli(["--root", root, "rollback", "ean"]) == 0
    assert capsys.readouterr().out.strip() == "ean:stable -> v1"
    assert cli(["--root", root, "verify"]) == 0
    (store.version_dir("ean", 2) / "model.onnx").write_bytes(b"tampered")
    assert cli(["--root", root, "verify"]) == 1
    assert "ean v2: model.onnx: size" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root", "/nonexistent/store", "list"], "error: model store root '/nonexistent/store' does not exist"),
        (["list", "ghost"], "error: unknown model 'ghost'"),
        (["show", "ean", "9"], "error: unknown version 9 of model 'ean'"),
        (["show", "ean", "1"], "error: ean v1: corrupt manifest"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(store, model_file, args, message) -> None:
    store.publish(make_manifest(), {"model.onnx": model_file})
    (store.version_dir("ean", 1) / "manifest.json").write_text("{}")
    if args[0] != "--root":
        args = ["--root", str(store.root), *args]
    proc = subprocess.run([sys.executable, "-m", "model_store", *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message)
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
