"""Data-parallel training under torchrun: 2 gloo processes, end to end, on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_store import ModelStore
from tests.trainer.conftest import TINY_SETS

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_gloo_processes_fit_distil_export_publish(tiny_data: Path, tmp_path: Path) -> None:
    store, run = tmp_path / "store", tmp_path / "run"
    sets = [arg for s in TINY_SETS for arg in ("--set", s)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "trainer", "fit", "--data", str(tiny_data), "--rounds", "1", "--store", str(store),
           "--out", str(run), "--set", "quantize=false", *sets]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["processes"] == 2
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["kind"] for r in rounds] == ["ce", "kd"]
    # Each rank took half of every epoch, 16 faces a step: the effective batch of one process.
    assert all(h["images_per_s"] > 0 for r in rounds for h in r["history"])
    assert proc.stdout.count("published ean v1 -> stable") == 1  # rank 0 alone publishes
    st = ModelStore(store)
    assert st.verify("ean", 1) == []
    m = st.manifest("ean", 1)
    assert m.metrics.val_accuracy > 0.3  # twice chance: the two processes really trained one model
    sess = ort.InferenceSession(str(st.version_dir("ean", 1) / m.model_file), providers=["CPUExecutionProvider"])
    faces = np.load(tiny_data / "val.npz")["x"][:4, None]
    assert sess.run([m.output.name], {m.input.name: faces})[0].shape == (4, len(m.labels))
