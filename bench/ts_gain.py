"""Gain of each teacher-student round over its cross-entropy control, on the served graph.

    python -m trainer fit --data data/fer2013 --config trainer/configs/fer2013.yaml --out runs/fer2013
    python -m trainer control --data data/fer2013 --run runs/fer2013
    python bench/ts_gain.py --data data/fer2013 --run runs/fer2013

A control round starts from the very same weights and optimizer state as its T-S round and has the
same epochs, schedule, shuffling and augmentation; only the teacher's soft labels are missing. So a
gain that extra epochs alone would give does not count as a gain of the method. Both models of a
pair are exported and scored as the service runs them: ONNX, uint8 faces, one pass, no TTA.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from trainer.data import LABELS, DataError, load_split
from trainer.evaluate import served_score
from trainer.export import export_onnx
from trainer.train import load_checkpoint


def served(ckpt: Path, val, tmp: Path) -> float:
    model, _ = load_checkpoint(ckpt, torch.device("cpu"))
    path = tmp / "m.onnx"
    export_onnx(model, path, list(LABELS), model.cfg.in_size, val.x[:64])
    return served_score(path, val).accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", type=Path, required=True, help="fit's --out, holding control's results too")
    args = parser.parse_args()
    for name, then in (("rounds.json", "python -m trainer fit"), ("control.json", "python -m trainer control")):
        if not (args.run / name).is_file():
            sys.exit(f"error: {args.run / name} is missing: run `{then}` on {args.run} first")
    rounds = {r["round"]: r for r in json.loads((args.run / "rounds.json").read_text())}
    controls = {r["round"]: r for r in json.loads((args.run / "control.json").read_text())}
    try:
        val = load_split(args.data, "val")
    except DataError as exc:
        sys.exit(f"error: {exc}")
    print(f"{'round':>5} {'kind':>8} {'epochs':>6} {'T-S served':>11} {'control served':>15} {'gain, pt':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in sorted(rounds):
            r = rounds[rnd]
            if not (args.run / f"round{rnd}.pt").exists():
                continue  # a teacher from the store: its own version is measured by its manifest
            t = served(args.run / f"round{rnd}.pt", val, Path(tmp))
            if rnd in controls:
                c = served(args.run / f"control{rnd}.pt", val, Path(tmp))
                tail = f"{c:>15.4f} {(t - c) * 100:>+9.2f}"
            else:
                tail = f"{'n/a':>15} {'n/a':>9}"
            print(f"{rnd:>5} {r['kind']:>8} {r['epochs']:>6} {t:>11.4f} {tail}", flush=True)


if __name__ == "__main__":
    main()
