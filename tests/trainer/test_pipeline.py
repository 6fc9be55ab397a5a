"""The whole trainer pipeline on a tiny synthetic dataset, in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model_store import ModelStore
from tests.trainer.conftest import TINY_SETS
from trainer.__main__ import main as trainer_cli

REPO = Path(__file__).resolve().parents[2]


def _fit(data: Path, tmp: Path, store: Path, *extra: str) -> int:
    sets = [arg for s in TINY_SETS for arg in ("--set", s)]
    args = ["fit", "--data", str(data), "--rounds", "1", "--store", str(store), "--out", str(tmp)]
    return trainer_cli([*args, *sets, *extra])


def test_fit_export_publish_promote_verify_load(tiny_data: Path, tmp_path: Path) -> None:
    store_root = tmp_path / "store"
    assert _fit(tiny_data, tmp_path / "run1", store_root) == 0
    store = ModelStore(store_root)
    assert store.aliases("ean") == {"candidate": 1, "stable": 1}
    assert store.verify("ean", 1) == []
    m = store.manifest("ean", 1)
    assert [r.kind for r in m.metrics.rounds] == ["ce", "kd"]
    assert m.input.dtype == "uint8" and m.input.normalization_in_graph
    assert m.metrics.val_accuracy > 0.3  # twice chance: training really happened
    assert set(m.files) >= {"model.onnx", "report.json", "learning_curves.png", "confusion.png"}
    for png in ("learning_curves.png", "confusion.png"):
        assert (store.version_dir("ean", 1) / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model_path = store.version_dir("ean", 1) / "model.onnx"
    proto = onnx.load(str(model_path))
    assert proto.opset_import[0].version >= 17
    assert json.loads({p.key: p.value for p in proto.metadata_props}["labels"]) == m.labels
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.type == "tensor(uint8)" and isinstance(inp.shape[0], str)  # dynamic batch
    faces = np.load(tiny_data / "val.npz")["x"][:5, None]
    probs = sess.run(None, {inp.name: faces})[0]
    assert probs.shape == (5, len(m.labels))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    if "int8" in m.variants:
        assert m.metrics.val_accuracy - m.variants["int8"].val_accuracy <= 0.005

    # The stable gate: a worse run is published as candidate only, unless forced.
    assert _fit(tiny_data, tmp_path / "run2", store_root, "--set", "round0.epochs=1", "--set", "round0.lr=0.0001") == 0
    assert store.aliases("ean") == {"candidate": 2, "stable": 1}
    assert _fit(tiny_data, tmp_path / "run3", store_root, "--set", "round0.epochs=1", "--set", "round0.lr=0.0001",
                "--force-promote") == 0
    assert store.aliases("ean")["stable"] == 3


def test_control_run_continues_from_round0_without_publishing(tiny_data: Path, tmp_path: Path) -> None:
    sets = [arg for s in TINY_SETS for arg in ("--set", s)]
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "1", "--out", str(tmp_path / "a"),
                        "--set", "quantize=false", *sets]) == 0
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "1", "--out", str(tmp_path / "c"), "--control",
                        "--round0", str(tmp_path / "a" / "round0.pt"), *sets]) == 0
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    c = json.loads((tmp_path / "c" / "report.json").read_text())
    assert c["control"] and [r["kind"] for r in c["rounds"]] == ["ce", "control"]
    assert c["rounds"][0]["val_accuracy"] == a["rounds"][0]["val_accuracy"]  # the very same round-0 model


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent"], "error: data directory '/nonexistent' does not exist"),
        (["--set", "alpha=2"], "error: config key 'alpha'"),
        (["--set", "nonsense"], "error: --set expects key=value"),
    ],
)
def test_cli_bad_input_is_one_line(tiny_data: Path, tmp_path: Path, args: list[str], message: str) -> None:
    cmd = [sys.executable, "-m", "trainer", "fit", "--data", str(tiny_data), "--out", str(tmp_path), *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(message)
