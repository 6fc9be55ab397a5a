"""Training in stages that survive an interruption: resumed rounds, published members, transfer from the store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from model_store import ModelStore
from tests.trainer.conftest import TINY_SETS
from trainer.__main__ import main as trainer_cli

REPO = Path(__file__).resolve().parents[2]
SETS = [arg for s in [*TINY_SETS, "round0.epochs=10", "round_k.epochs=6", "quantize=false"] for arg in ("--set", s)]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _fit_killed_at(data: Path, out: Path, partial: str, *extra: str) -> None:
    """``python -m trainer fit`` killed (SIGKILL: no chance to clean up) once ``partial`` holds an epoch."""
    cmd = [sys.executable, "-m", "trainer", "fit", "--data", str(data), "--rounds", "1", "--out", str(out),
           *SETS, *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / partial).exists():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tiny_data: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "1", "--out", str(whole), *SETS]) == 0

    run = tmp_path / "run"
    _fit_killed_at(tiny_data, run, "round0.partial.pt")  # in round 0 (cross-entropy)
    saved = torch.load(run / "round0.partial.pt", weights_only=True)["history"]
    assert 1 <= len(saved) < 10 and not (run / "round0.pt").exists()
    _fit_killed_at(tiny_data, run, "round1.partial.pt", "--resume")  # then in round 1 (distillation)
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "1", "--out", str(run), "--resume",
                        *SETS]) == 0

    for name in ("round0.pt", "round1.pt"):
        a, b = _weights(whole / name), _weights(run / name)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: the resumed run diverged"
    full = json.loads((whole / "rounds.json").read_text())
    resumed = json.loads((run / "rounds.json").read_text())
    for x, y in zip(full, resumed, strict=True):
        assert [h["val_accuracy"] for h in x["history"]] == [h["val_accuracy"] for h in y["history"]]
        assert [h["epoch"] for h in y["history"]] == list(range(1, x["epochs"] + 1))
    assert not list(run.glob("*.partial*"))  # a finished round leaves no state behind

    # An interrupted control resumes too, to the control an uninterrupted one gives.
    assert trainer_cli(["control", "--data", str(tiny_data), "--run", str(whole)]) == 0
    assert trainer_cli(["control", "--data", str(tiny_data), "--run", str(run), "--resume"]) == 0
    a, b = _weights(whole / "control1.pt"), _weights(run / "control1.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_the_state_of_another_architecture(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fit_killed_at(tiny_data, run, "round0.partial.pt")
    proc = subprocess.run([sys.executable, "-m", "trainer", "fit", "--data", str(tiny_data), "--rounds", "1",
                           "--out", str(run), "--resume", *SETS, "--set", "student.widths=[16,48]"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "another architecture" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_published_members_teach_as_an_ensemble_and_a_stage_starts_from_the_store(
    tiny_data: Path, tmp_path: Path
) -> None:
    store_root = tmp_path / "store"
    member = ["--rounds", "0", "--store", str(store_root), "--set", "model_name=ean-teacher", *SETS]
    for seed in (1, 2):
        assert trainer_cli(["fit", "--data", str(tiny_data), "--out", str(tmp_path / f"m{seed}"), *member,
                            "--set", f"seed={seed}"]) == 0
    store = ModelStore(store_root)
    assert store.versions("ean-teacher") == [1, 2]
    m = store.manifest("ean-teacher", 2)
    assert m.lineage.seed == 2 and m.metrics.rounds[0].epochs == 10 and m.metrics.wall_time_s > 0
    assert m.lineage.device == "cpu" and m.lineage.config["round0"]["epochs"] == 10
    assert "checkpoint.pt" in m.files and store.verify("ean-teacher", 2) == []

    # What the members are worth as a teacher, each and together, as a round runs them.
    bench = subprocess.run([sys.executable, "bench/bench_ensemble.py", "--data", str(tiny_data), "--store",
                            str(store_root)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr
    lines = bench.stdout.splitlines()
    assert lines[1].startswith("ean-teacher:1") and lines[-1].startswith("ensemble of 2")
    assert all(line.rstrip().endswith("%") for line in lines[1:])

    members = f"teacher_store=[{{store: {store_root}, name: ean-teacher, version: 1}}, " \
              f"{{store: {store_root}, name: ean-teacher, version: 2}}]"
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "1", "--out", str(tmp_path / "s1"),
                        "--store", str(store_root), *SETS, "--set", members]) == 0
    s1 = store.manifest("ean", 1)
    assert s1.lineage.teachers == ["ean-teacher:1", "ean-teacher:2"] and s1.lineage.teacher_version is None
    assert [r.kind for r in s1.metrics.rounds] == ["teacher", "kd"]

    # The next round is a stage of its own: the student starts from the published checkpoint.
    start = f"init_from={{store: {store_root}, name: ean, version: 1}}"
    assert trainer_cli(["fit", "--data", str(tiny_data), "--rounds", "1", "--out", str(tmp_path / "s2"),
                        "--store", str(store_root), *SETS, "--set", members, "--set", start,
                        "--set", "round_k.lr=1e-9", "--force-promote"]) == 0
    s2 = store.manifest("ean", 2)
    assert s2.lineage.init_from == "ean:1"
    before = _weights(store.version_dir("ean", 1) / "checkpoint.pt")
    after = _weights(store.version_dir("ean", 2) / "checkpoint.pt")
    convs = [k for k in before if k.endswith("weight") and before[k].ndim == 4]
    for k in convs:  # a learning rate of 1e-9 leaves the transferred weights where they were
        np.testing.assert_allclose(after[k].numpy(), before[k].numpy(), atol=1e-5)
    fresh = _weights(tmp_path / "s1" / "round1.pt")
    assert not all(torch.equal(fresh[k], after[k]) for k in convs) or fresh is not after
