"""``python -m trainer fit``: iterative teacher-student distillation of an EAN, exported and published.

Example:
    python -m trainer fit --data ../shared/data/fer2013 --config trainer/configs/fer2013.yaml \\
        --rounds 3 --store model_store/seed --out runs/fer2013
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel

from model_store import InputSpec, Lineage, Manifest, Metrics, ModelStore, RoundMetrics, StoreError, Variant
from trainer.config import ConfigError, TrainConfig, load_config
from trainer.data import LABELS, DataError, load_split
from trainer.export import ExportError, export_onnx, onnx_probs, quantize_int8
from trainer.model import PIXEL_MEAN, PIXEL_STD, count_macs, count_params
from trainer.report import plot_confusion, plot_learning_curves, write_json
from trainer.train import RoundResult, fit


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True).stdout.strip()
        return rev or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _round_dict(r: RoundResult) -> dict:
    assert r.evaluation is not None
    return {
        "round": r.round, "kind": r.kind, "epochs": r.epochs, "wall_time_s": round(r.wall_time_s, 1),
        "val_accuracy": r.evaluation.accuracy, "val_accuracy_tta": r.evaluation.accuracy_tta,
        "history": r.history,
    }


def _parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def cmd_fit(args: argparse.Namespace) -> int:
    overrides = _parse_sets(args.set)
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    cfg = load_config(args.config, overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = cfg.student.in_size
    train, val = load_split(args.data, "train", size), load_split(args.data, "val", size)
    print(f"data: {len(train)} train, {len(val)} val faces from {args.data}", flush=True)
    t0 = time.perf_counter()
    results = fit(train, val, cfg, control=args.control, out=out, round0=args.round0)
    rounds = [_round_dict(r) for r in results]
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    if args.control:
        write_json(out / "report.json", {"control": True, "rounds": rounds, "wall_time_s": time.perf_counter() - t0})
        plot_learning_curves(out / "learning_curves.png", rounds)
        for r in rounds:
            print(f"control round {r['round']}: val {r['val_accuracy']:.4f} (tta {r['val_accuracy_tta']:.4f})")
        return 0

    best = max(results, key=lambda r: r.score(cfg.tta))  # the first best: ties keep the earlier round
    onnx_path = out / "model.onnx"
    diff = export_onnx(best.model, onnx_path, list(LABELS), size, val.x[:64])
    probs = onnx_probs(onnx_path, val.x, tta=cfg.tta)
    pred = probs.argmax(1)
    val_acc = float((pred == val.y).mean())
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    np.add.at(confusion, (val.y, pred), 1)
    recall = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    files = {"model.onnx": onnx_path}
    variants = {}
    int8_note = "not attempted"
    if cfg.quantize:
        int8_path = out / "model.int8.onnx"
        rng = np.random.default_rng(cfg.seed)
        quantize_int8(onnx_path, int8_path, train.x[rng.choice(len(train), min(512, len(train)), replace=False)])
        int8_acc = float((onnx_probs(int8_path, val.x, tta=cfg.tta).argmax(1) == val.y).mean())
        drop = val_acc - int8_acc
        int8_note = f"int8 val {int8_acc:.4f} ({-drop * 100:+.2f} pt)"
        if drop <= cfg.max_int8_drop:
            files["model.int8.onnx"] = int8_path
            variants["int8"] = Variant(file="model.int8.onnx", val_accuracy=int8_acc, note="static QDQ, per-channel")
        else:
            int8_note += f": not published, drop > {cfg.max_int8_drop * 100:.1f} pt"
    wall = time.perf_counter() - t0

    params, macs = count_params(best.model), count_macs(best.model, size)
    report = {
        "rounds": rounds, "best_round": best.round, "val_accuracy": val_acc, "tta": cfg.tta,
        "per_class_recall": dict(zip(LABELS, map(float, recall), strict=True)),
        "confusion": confusion.tolist(), "params": params, "macs": macs, "parity_max_abs_diff": diff,
        "int8": int8_note, "wall_time_s": round(wall, 1),
    }
    write_json(out / "report.json", report)
    plot_learning_curves(out / "learning_curves.png", rounds)
    plot_confusion(out / "confusion.png", confusion, list(LABELS),
                   f"round {best.round}, val {val_acc:.1%}{' (flip TTA)' if cfg.tta else ''}")
    for name in ("report.json", "learning_curves.png", "confusion.png"):
        files[name] = out / name
    for r in rounds:
        print(f"round {r['round']} ({r['kind']}): val {r['val_accuracy']:.4f} tta {r['val_accuracy_tta']:.4f} "
              f"[{r['wall_time_s']:.0f} s]")
    print(f"best round {best.round}: onnx val {val_acc:.4f}; params {params}, MACs {macs}; parity {diff:.1e}; "
          f"{int8_note}; wall {wall:.0f} s")
    if args.store is None:
        return 0

    manifest = Manifest(
        name=cfg.model_name,
        labels=list(LABELS),
        input=InputSpec(shape=[None, 1, size, size], dtype="uint8", colour="gray", mean=PIXEL_MEAN, std=PIXEL_STD,
                        normalization_in_graph=True),
        crop_margin=cfg.crop_margin,
        variants=variants,
        lineage=Lineage(dataset=Path(args.data).resolve().name, round=best.round, teacher_version=None,
                        seed=cfg.seed, code_version=code_version(), config=cfg.model_dump()),
        metrics=Metrics(
            val_accuracy=val_acc, tta=cfg.tta, per_class_recall=report["per_class_recall"], params=params,
            macs=macs, wall_time_s=round(wall, 1),
            rounds=[RoundMetrics(**{k: v for k, v in r.items() if k != "history"}) for r in rounds],
        ),
    )
    store = ModelStore(args.store, create=True)
    version = store.publish(manifest, files)
    store.set_alias(cfg.model_name, "candidate", version)
    stable = store.aliases(cfg.model_name).get("stable")
    stable_acc = store.manifest(cfg.model_name, stable).metrics.val_accuracy if stable else None
    if stable_acc is None or val_acc >= stable_acc or args.force_promote:
        store.set_alias(cfg.model_name, "stable", version)
        print(f"published {cfg.model_name} v{version} -> stable")
    else:
        print(f"published {cfg.model_name} v{version} -> candidate only: val {val_acc:.4f} < stable v{stable} "
              f"{stable_acc:.4f} (--force-promote overrides)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fit", help="train round 0 and the T-S rounds, export, publish",
                       description="Keys of the --config YAML file (all optional):\n" + _config_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a dir with train/val .npz, fer2013.csv, or <split>/<class>/ images")
    p.add_argument("--config", help="YAML file of TrainConfig keys (see trainer/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, dotted for nesting (e.g. round0.epochs=5)")
    p.add_argument("--rounds", type=int, help="T-S rounds after round 0 (overrides the config)")
    p.add_argument("--store", help="model store root to publish into (omit to only export)")
    p.add_argument("--out", default="runs/latest", help="directory for the ONNX files and reports")
    p.add_argument("--control", action="store_true",
                   help="control run: the same rounds on cross-entropy alone, nothing published")
    p.add_argument("--round0", type=Path, help="start from this round-0 checkpoint instead of training it")
    p.add_argument("--force-promote", action="store_true", help="promote to stable even if val accuracy is lower")
    p.set_defaults(func=cmd_fit)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, ExportError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _config_help() -> str:
    """One line per key, nested sections flattened to dotted keys (as --set takes them)."""
    lines = []
    for name, f in TrainConfig.model_fields.items():
        if isinstance(f.default, BaseModel):
            lines.append(f"  {name}: {f.description or ''}")
            for key, value in f.default.model_dump().items():
                sub_desc = type(f.default).model_fields[key].description or ""
                lines.append(f"  {name}.{key} (default {value}): {sub_desc}")
        else:
            lines.append(f"  {name} (default {f.default}): {f.description or ''}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
