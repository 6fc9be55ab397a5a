"""``python -m trainer``: iterative teacher-student distillation of an EAN, exported and published.

    python -m trainer fit --data data/fer2013 --config trainer/configs/fer2013.yaml \\
        --out runs/fer2013 --store model_store/seed
    python -m trainer control --data data/fer2013 --config trainer/configs/fer2013.yaml \\
        --run runs/fer2013
    python -m trainer publish --data data/fer2013 --run runs/fer2013 --store model_store/seed

``fit`` trains round 0 and the T-S rounds, then does what ``publish`` does: export the best round,
measure the served graph, write the reports and, with ``--store``, publish through the stable gate.
``control`` trains each round again on cross-entropy alone from the same start (bench/ts_gain.py).
Both train data-parallel under torchrun (``torchrun --standalone --nproc_per_node=N -m trainer fit …``).
"""

from __future__ import annotations

import importlib.util
import sys

# Checked before anything imports them, so a service-only install gets one line, not a traceback
# (pyproject lets the imports below come after this).
_NEEDS = ("torch", "onnx", "onnxruntime", "cv2", "tqdm", "matplotlib")
_MISSING = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
if _MISSING and __name__ == "__main__":
    sys.exit(
        f"python -m trainer needs the trainer extra ({', '.join(_MISSING)} missing): "
        ".venv/bin/pip install -e '.[trainer]'. On Linux that takes the CUDA build of torch (GBs); "
        "for the CPU one run .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu first."
    )

import argparse
from pathlib import Path

import yaml
from pydantic import BaseModel

from model_store import StoreError
from trainer.config import ConfigError, TrainConfig, load_config
from trainer.data import DataError, load_split
from trainer.distributed import close_world, is_main_process
from trainer.export import ExportError
from trainer.publish import RunError, publish_run
from trainer.recipe import RecipeError, run_recipe
from trainer.recipe import __doc__ as recipe_doc
from trainer.ship import __doc__ as ship_doc
from trainer.ship import ship
from trainer.smoke import __doc__ as smoke_doc
from trainer.smoke import smoke
from trainer.train import ResumeError, control, fit


def _parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def _config(args: argparse.Namespace) -> TrainConfig:
    overrides = _parse_sets(args.set)
    if getattr(args, "rounds", None) is not None:
        overrides["rounds"] = args.rounds
    return load_config(args.config, overrides)


def cmd_fit(args: argparse.Namespace) -> int:
    cfg = _config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = cfg.student.in_size
    train, val = load_split(args.data, "train", size), load_split(args.data, "val", size)
    print(f"data: {len(train)} train, {len(val)} val faces from {args.data}", flush=True)
    if is_main_process():
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    fit(train, val, cfg, out, rounds=args.only_rounds, resume=args.resume)
    close_world()
    if not is_main_process():
        return 0
    publish_run(out, train, val, cfg, store=args.store, force_promote=args.force_promote,
                data_name=Path(args.data).resolve().name)
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if args.config is None and not (run / "config.yaml").is_file():
        raise RunError(f"{run} is not a run of `python -m trainer fit` (no config.yaml): train it first with "
                       f"`python -m trainer fit --out {run}`")
    cfg = load_config(run / "config.yaml", _parse_sets(args.set)) if args.config is None else _config(args)
    out = Path(args.out or args.run)
    out.mkdir(parents=True, exist_ok=True)
    size = cfg.student.in_size
    train, val = load_split(args.data, "train", size), load_split(args.data, "val", size)
    control(train, val, cfg, run, out, args.only_rounds or list(range(1, cfg.rounds + 1)), resume=args.resume)
    close_world()
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    size = cfg.student.in_size
    train, val = load_split(args.data, "train", size), load_split(args.data, "val", size)
    publish_run(run, train, val, cfg, store=args.store, force_promote=args.force_promote,
                data_name=Path(args.data).resolve().name)
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    ship(args.source_store, args.ref, args.store, args.name, args.data, force_promote=args.force_promote)
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    return smoke(Path(args.out))


def cmd_recipe(args: argparse.Namespace) -> int:
    run_recipe(args.recipe, args.data, args.store, args.runs, overrides=_parse_sets(args.set), dry_run=args.dry_run,
               until=args.until)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    data_help = "a dir with train/val .npz, fer2013.csv, or <split>/<class>/ images"

    p = sub.add_parser("fit", help="train round 0 and the T-S rounds, export, publish",
                       description="Keys of the --config YAML file (all optional):\n" + _config_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--config", help="YAML file of TrainConfig keys (see trainer/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, dotted for nesting (e.g. round0.epochs=5)")
    p.add_argument("--rounds", type=int, help="T-S rounds after round 0 (overrides the config)")
    p.add_argument("--only-rounds", type=int, nargs="+", metavar="K",
                   help="train only these rounds, taking the others from --out (resume a run)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rounds --out has finished and continue an interrupted one at its last epoch")
    p.add_argument("--store", help="model store root to publish into (omit to only export)")
    p.add_argument("--out", default="runs/latest", help="directory for checkpoints, ONNX files and reports")
    p.add_argument("--force-promote", action="store_true", help="promote to stable even if val accuracy is lower")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("control", help="each T-S round again on cross-entropy alone, from the same start")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--run", required=True, help="the T-S run (fit's --out) whose rounds to control")
    p.add_argument("--config", help="defaults to the run's own config.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    p.add_argument("--only-rounds", type=int, nargs="+", metavar="K", help="control only these rounds")
    p.add_argument("--resume", action="store_true",
                   help="keep the controls already finished and continue an interrupted one at its last epoch")
    p.add_argument("--out", help="directory for control<k>.pt and control.json (default: the run's, where "
                   "publish and bench/ts_gain.py look)")
    p.set_defaults(func=cmd_control)

    p = sub.add_parser("publish", help="export a trained run's best round, write reports, publish")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--run", required=True, help="fit's --out")
    p.add_argument("--store", help="model store root to publish into (omit to only export)")
    p.add_argument("--force-promote", action="store_true", help="promote to stable even if val accuracy is lower")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("recipe", help="train and publish a recipe's stages, skipping those the store holds",
                       description=recipe_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="a recipe YAML file (see trainer/recipes/)")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--store", required=True, help="model store root: where stages are published and found")
    p.add_argument("--runs", default="runs", help="parent of each stage's run directory (<runs>/<recipe>/<stage>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key in every stage, e.g. device=cuda (device and threads do not "
                   "make a stage another one)")
    p.add_argument("--dry-run", action="store_true", help="list each stage: published, to train, or waiting")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage (a session's worth of the recipe)")
    p.set_defaults(func=cmd_recipe)

    p = sub.add_parser("ship", help="publish a version of the lineage store into the service's store, through the "
                       "stable gate", description=ship_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", help="name:version (or name:alias) in --from, e.g. ean-student:3")
    p.add_argument("--from", dest="source_store", default="model_store/lineage", help="the store it was trained into")
    p.add_argument("--store", default="model_store/seed", help="the store the service reads")
    p.add_argument("--name", default="ean", help="the model name the service loads (model.name in its config)")
    p.add_argument("--data", required=True, help=data_help + " (its val split re-scores both graphs)")
    p.add_argument("--force-promote", action="store_true", help="promote to stable even if val accuracy is lower")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("smoke", help="the whole pipeline on a toy dataset it makes itself, in about a minute",
                       description=smoke_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/smoke", help="where the toy data, the run and its store go")
    p.set_defaults(func=cmd_smoke)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, ExportError, StoreError, RunError, ResumeError, RecipeError) as exc:
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
