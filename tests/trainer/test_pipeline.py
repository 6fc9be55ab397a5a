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
import torch

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
    assert not m.metrics.tta  # the manifest's figure is the served graph's
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
        int8 = m.variants["int8"]
        assert m.metrics.val_accuracy - int8.val_accuracy <= 0.005
        assert int8.agreement is not None and int8.agreement >= 0.99
        assert int8.max_score_shift is not None and int8.max_score_shift <= 0.15

    # The stable gate: a worse run is published as candidate only, unless forced.
    assert _fit(tiny_data, tmp_path / "run2", store_root, "--set", "round0.epochs=1", "--set", "round0.lr=0.0001") == 0
    assert store.aliases("ean") == {"candidate": 2, "stable": 1}
    assert _fit(tiny_data, tmp_path / "run3", store_root, "--set", "round0.epochs=1", "--set", "round0.lr=0.0001",
                "--force-promote") == 0
    assert store.aliases("ean")["stable"] == 3


def test_control_rounds_start_where_their_t_s_rounds_start(tiny_data: Path, tmp_path: Path) -> None:
    """With alpha = 0 the KD loss is plain CE, so a T-S round and its control must then be the very same
    run: same start (transferred weights and optimizer), schedule, shuffling and augmentation."""
    sets = [arg for s in TINY_SETS for arg in ("--set", s)]
    run = tmp_path / "run"
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "2", "--out", str(run),
                        "--set", "quantize=false", "--set", "alpha=0", *sets]) == 0
    assert trainer_cli(["control", "--data", str(tiny_data), "--run", str(run)]) == 0
    ts = json.loads((run / "rounds.json").read_text())
    control = json.loads((run / "control.json").read_text())
    assert [r["kind"] for r in ts] == ["ce", "kd", "kd"] and [r["kind"] for r in control] == ["control"] * 2
    for rnd in (1, 2):
        a = torch.load(run / f"round{rnd}.pt", weights_only=True)["state_dict"]
        b = torch.load(run / f"control{rnd}.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), f"round {rnd} and its control diverged"
    # With the teacher's soft labels back in, round 1 is no longer its control.
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "1", "--out", str(tmp_path / "kd"),
                        "--set", "quantize=false", *sets]) == 0
    assert trainer_cli(["control", "--data", str(tiny_data), "--run", str(tmp_path / "kd")]) == 0
    a = torch.load(tmp_path / "kd" / "round1.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "kd" / "control1.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_only_rounds_retrains_one_round_and_keeps_the_others(tiny_data: Path, tmp_path: Path) -> None:
    sets = [arg for s in TINY_SETS for arg in ("--set", s)]
    run = tmp_path / "run"
    base = ["fit", "--data", str(tiny_data), "--rounds", "2", "--out", str(run), "--set", "quantize=false", *sets]
    assert trainer_cli(base) == 0
    before = json.loads((run / "rounds.json").read_text())
    assert trainer_cli([*base, "--only-rounds", "2", "--set", "teacher_set=first"]) == 0
    after = json.loads((run / "rounds.json").read_text())
    assert [r["round"] for r in after] == [0, 1, 2]
    assert after[:2] == before[:2]
    assert after[2]["history"] != before[2]["history"]  # round 2 really trained again, from round 1


def test_wider_teacher_then_students_from_scratch_and_ensemble(tiny_data: Path, tmp_path: Path) -> None:
    sets = [arg for s in TINY_SETS for arg in ("--set", s)]
    teacher = ["--set", "teacher={stem: 8, widths: [32, 64], depths: [1, 1], strides: [2, 2]}"]
    run = tmp_path / "run"
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "2", "--out", str(run), "--set", "quantize=false",
                        "--set", "teacher_set=ensemble", *sets, *teacher, "--store", str(tmp_path / "store")]) == 0
    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["kind"] for r in rounds] == ["teacher", "kd", "kd"]
    assert rounds[0]["arch"]["widths"] == [32, 64] and rounds[1]["arch"]["widths"] == [16, 32]
    report = json.loads((run / "report.json").read_text())
    assert report["rounds"][0]["served_accuracy"] is None  # the teacher is not what the service runs
    assert report["best_round"] in (1, 2)
    m = ModelStore(tmp_path / "store").manifest("ean", 1)
    assert m.lineage.device == "cpu" and m.lineage.config["teacher"]["widths"] == [32, 64]
    assert not m.metrics.tta and m.metrics.val_accuracy == report["val_accuracy"]
    assert (m.input.name, m.output.name) == ("faces", "probs") and m.crop_policy == "square_margin"
    # Round 1's control starts from scratch too (a wider teacher cannot be copied), before round 0 exists.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text((run / "config.yaml").read_text())
    assert trainer_cli(["control", "--data", str(tiny_data), "--run", str(fresh), "--only-rounds", "1"]) == 0
    a = torch.load(run / "round1.pt", weights_only=True)["state_dict"]
    b = torch.load(fresh / "control1.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)


def test_a_published_version_teaches_the_next(tiny_data: Path, tmp_path: Path) -> None:
    """Round 0 can be a version from the store: no training, its ONNX graph labels the student's views."""
    store = tmp_path / "store"
    assert _fit(tiny_data, tmp_path / "v1", store, "--set", "quantize=false") == 0
    teacher = f"teacher_store={{store: {store}, name: ean, version: 1}}"
    assert _fit(tiny_data, tmp_path / "v2", store, "--set", "quantize=false", "--set", teacher,
                "--force-promote") == 0
    rounds = json.loads((tmp_path / "v2" / "rounds.json").read_text())
    assert [(r["kind"], r["epochs"], r["teachers"]) for r in rounds] == [("teacher", 0, ["ean:1"]), ("kd", 2, None)]
    assert not (tmp_path / "v2" / "round0.pt").exists()  # the teacher stays in its store
    m = ModelStore(store).manifest("ean", 2)
    assert m.lineage.teacher_version == 1 and m.lineage.teachers == ["ean:1"] and m.lineage.round == 1
    # A teacher that fails verification is refused before any training, in one line.
    (ModelStore(store).version_dir("ean", 1) / "model.onnx").write_bytes(b"broken")
    cmd = [sys.executable, "-m", "trainer", "fit", "--data", str(tiny_data), "--out", str(tmp_path / "x"),
           "--set", teacher]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: teacher ean v1 failed verification")


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


def test_without_data_every_entry_point_says_what_to_do(tmp_path: Path) -> None:
    """A newcomer without FER2013: one line each, naming where the data comes from or what to run first."""
    missing = str(tmp_path / "fer2013")
    runs = [
        ([sys.executable, "-m", "trainer", "fit", "--data", missing, "--out", str(tmp_path / "o")],
         ["does not exist", "docs/training.md", "python -m trainer smoke"]),
        ([sys.executable, "-m", "trainer", "control", "--data", missing, "--run", str(tmp_path / "nothing")],
         ["is not a run of `python -m trainer fit`", "python -m trainer fit --out"]),
        ([sys.executable, "bench/ts_gain.py", "--data", missing, "--run", str(tmp_path / "nothing")],
         ["rounds.json is missing"]),
        ([sys.executable, "bench/bench_ddp.py", "--data", missing, "--procs", "1"],
         ["does not exist", "docs/training.md"]),
    ]
    for cmd, words in runs:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0, cmd
        lines = [line for line in proc.stderr.strip().splitlines() if line]
        assert len(lines) == 1 and lines[0].startswith("error: "), (cmd, proc.stderr[-2000:])
        assert all(w in lines[0] for w in words), (cmd, lines[0])


def test_the_smoke_run_trains_exports_and_publishes_on_its_own_data(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "trainer", "smoke", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"FER_MODEL__STORE={tmp_path / 'store'} make run" in proc.stdout
    store = ModelStore(tmp_path / "store")
    assert store.aliases("ean")["stable"] == 1 and store.verify("ean", 1) == []
    assert store.manifest("ean", 1).metrics.val_accuracy > 0.5  # the bands are learnt: the pipeline really ran


def test_an_int8_variant_that_moves_scores_is_not_published(tiny_data: Path, tmp_path: Path) -> None:
    """No quantised graph reproduces every probability exactly: with no shift allowed, none is published."""
    assert _fit(tiny_data, tmp_path / "run", tmp_path / "store", "--set", "max_int8_score_shift=0",
                "--set", "max_int8_drop=1") == 0
    m = ModelStore(tmp_path / "store").manifest("ean", 1)
    assert m.variants == {} and "model.int8.onnx" not in m.files
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "top score moved at most" in report["int8"] and report["int8"].endswith("not published "
                                                                                 "(max_int8_drop, min_int8_agreement, "
                                                                                 "max_int8_score_shift)")
