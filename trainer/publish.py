"""After training: pick the round to ship, export it, measure the served graph, report, publish.

The figure that reaches the manifest is the served graph's: the ONNX file the service runs, uint8
faces in, one ``session.run``, no test-time augmentation.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from model_store import (
    InputSpec,
    Lineage,
    Manifest,
    Metrics,
    ModelStore,
    OutputSpec,
    RoundMetrics,
    Variant,
)
from trainer.config import StoreRef, TrainConfig
from trainer.data import LABELS, Split
from trainer.distributed import pick_device
from trainer.evaluate import int8_gate, served_score
from trainer.export import INPUT_NAME, OUTPUT_NAME, export_onnx
from trainer.model import PIXEL_MEAN, PIXEL_STD, count_macs, count_params
from trainer.report import plot_confusion, plot_learning_curves, write_json
from trainer.teacher import resolve
from trainer.train import CHECKPOINT_FILE, load_checkpoint


class RunError(Exception):
    """A run directory that cannot be published; the message names the missing piece."""


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True).stdout.strip()
        return rev or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load_rounds(run: Path) -> list[dict]:
    path = run / "rounds.json"
    if not path.exists():
        raise RunError(f"{path} is missing: train the run with `python -m trainer fit` first")
    return json.loads(path.read_text())


def _pick(run: Path, rounds: list[dict], cfg: TrainConfig, val: Split) -> dict:
    """The student round whose served graph scores best on val (ties keep the earlier round).

    Each round gets its ``served_accuracy``; the teacher's is None: it is not what the service runs.
    """
    best: dict | None = None
    tmp = run / "candidate.onnx"
    for r in rounds:
        r["served_accuracy"] = None
        if r["arch"] != cfg.student.model_dump():
            continue
        model, _ = load_checkpoint(run / f"round{r['round']}.pt", pick_device("cpu"))
        export_onnx(model, tmp, list(LABELS), cfg.student.in_size, val.x[:64])
        r["served_accuracy"] = served_score(tmp, val).accuracy
        if best is None or r["served_accuracy"] > best["served_accuracy"]:
            best = r
    tmp.unlink(missing_ok=True)
    if best is None:
        raise RunError(f"{run}: no round trained the student architecture")
    return best


def _own_teacher(teachers: list[str], name: str) -> int | None:
    """The one version of this model's own name that taught it, when exactly one did."""
    own = [int(ref.rpartition(":")[2]) for ref in teachers if ref.rpartition(":")[0] == name]
    return own[0] if len(teachers) == 1 and own else None


def _ref(ref: StoreRef) -> str:
    return f"{ref.name}:{resolve(ref)[1]}"


def _stable_served_accuracy(st: ModelStore, name: str, version: int, val: Split) -> float:
    """The stable version's served accuracy measured now, on the same faces: a manifest figure may
    have been taken another way (v1's used flip TTA, which the service never runs)."""
    m = st.manifest(name, version)
    return served_score(st.version_dir(name, version) / m.model_file, val).accuracy


def publish_run(run: Path, train: Split, val: Split, cfg: TrainConfig, *, store: str | None, force_promote: bool,
                data_name: str, stage: str | None = None) -> int | None:
    """Export, measure and report ``run``; with ``store``, publish it and return the new version."""
    rounds = _load_rounds(run)
    best = _pick(run, rounds, cfg, val)
    model, _ = load_checkpoint(run / f"round{best['round']}.pt", pick_device("cpu"))
    onnx_path = run / "model.onnx"
    diff = export_onnx(model, onnx_path, list(LABELS), cfg.student.in_size, val.x[:64])
    score = served_score(onnx_path, val)
    files = {"model.onnx": onnx_path, CHECKPOINT_FILE: run / f"round{best['round']}.pt"}
    variants: dict[str, Variant] = {}
    int8_note = "not attempted"
    if cfg.quantize:
        int8_path = run / "model.int8.onnx"
        gate = int8_gate(onnx_path, int8_path, train, val, cfg)
        int8_note = gate.note() + ("" if gate.passed else ": not published (max_int8_drop, min_int8_agreement, "
                                   "max_int8_score_shift)")
        if gate.passed:
            files["model.int8.onnx"] = int8_path
            variants["int8"] = Variant(file="model.int8.onnx", val_accuracy=gate.accuracy,
                                       note="static QDQ, per-channel", agreement=gate.agreement,
                                       max_score_shift=gate.max_score_shift)

    teachers = rounds[0].get("teachers") or []
    control_path = run / "control.json"
    controls = json.loads(control_path.read_text()) if control_path.exists() else []
    run_info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    params, macs = count_params(model), count_macs(model, cfg.student.in_size)
    wall = sum(r["wall_time_s"] for r in rounds)  # training alone, summed across resumes
    report = {
        "rounds": rounds, "controls": controls, "best_round": best["round"], "val_accuracy": score.accuracy,
        "val_accuracy_is": "served graph: ONNX, uint8 in, one pass, no TTA",
        "per_class_recall": score.per_class_recall, "confusion": score.confusion.tolist(),
        "params": params, "macs": macs, "parity_max_abs_diff": diff, "int8": int8_note,
        "train_wall_time_s": round(wall, 1), "device": run_info.get("device"),
    }
    write_json(run / "report.json", report)
    plot_learning_curves(run / "learning_curves.png", rounds, controls)
    plot_confusion(run / "confusion.png", score.confusion, list(LABELS),
                   f"round {best['round']}, served graph, val {score.accuracy:.1%}")
    for name in ("report.json", "learning_curves.png", "confusion.png"):
        files[name] = run / name
    for r in rounds:
        served = f"{r['served_accuracy']:.4f}" if r.get("served_accuracy") is not None else "  n/a "
        print(f"round {r['round']} ({r['kind']}): served {served}, torch {r['val_accuracy']:.4f}, "
              f"flip TTA {r['val_accuracy_tta']:.4f} [{r['wall_time_s']:.0f} s]")
    print(f"best round {best['round']}: served val {score.accuracy:.4f}; params {params}, MACs {macs}; "
          f"parity {diff:.1e}; {int8_note}; training wall {wall:.0f} s")
    if store is None:
        return None

    manifest = Manifest(
        name=cfg.model_name,
        labels=list(LABELS),
        input=InputSpec(name=INPUT_NAME, shape=[None, 1, cfg.student.in_size, cfg.student.in_size], dtype="uint8",
                        colour="gray", mean=PIXEL_MEAN, std=PIXEL_STD, normalization_in_graph=True),
        output=OutputSpec(name=OUTPUT_NAME),
        crop_margin=cfg.crop_margin,
        variants=variants,
        lineage=Lineage(dataset=data_name, round=best["round"], teacher_version=_own_teacher(teachers, cfg.model_name),
                        teachers=teachers, init_from=_ref(cfg.init_from) if cfg.init_from else None, stage=stage,
                        seed=cfg.seed,
                        code_version=code_version(), config=cfg.model_dump(), device=run_info.get("device")),
        metrics=Metrics(
            val_accuracy=score.accuracy, tta=False, per_class_recall=score.per_class_recall, params=params,
            macs=macs, wall_time_s=round(wall, 1),
            rounds=[RoundMetrics(**{k: r[k] for k in RoundMetrics.model_fields}) for r in rounds],
        ),
    )
    st = ModelStore(store, create=True)
    version = st.publish(manifest, files)
    promote(st, cfg.model_name, version, score.accuracy, val, force=force_promote)
    return version


def promote(st: ModelStore, name: str, version: int, accuracy: float, val: Split, *, force: bool) -> bool:
    """The stable gate: ``version`` becomes candidate, and stable too unless the stable version's served
    graph scores better on the same faces. Returns whether it became stable."""
    st.set_alias(name, "candidate", version)
    stable = st.aliases(name).get("stable")
    stable_acc = _stable_served_accuracy(st, name, stable, val) if stable else None
    if stable_acc is None or accuracy >= stable_acc or force:
        st.set_alias(name, "stable", version)
        print(f"published {name} v{version} -> stable")
        return True
    print(f"published {name} v{version} -> candidate only: val {accuracy:.4f} < stable "
          f"v{stable} {stable_acc:.4f} (--force-promote overrides)")
    return False
