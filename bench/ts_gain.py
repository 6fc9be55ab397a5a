"""Gain of each teacher-student round against the cross-entropy control.

    python -m trainer fit --data ../shared/data/fer2013 --config trainer/configs/fer2013.yaml \
        --store model_store/seed --out runs/fer2013
    python -m trainer fit --data ../shared/data/fer2013 --config trainer/configs/fer2013.yaml \
        --control --round0 runs/fer2013/round0.pt --out runs/fer2013-control
    python bench/ts_gain.py runs/fer2013/report.json runs/fer2013-control/report.json

The control continues the very same round-0 model on cross-entropy alone for the same epochs and
schedule, so a gain that extra epochs alone would give does not count as a gain of the method.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ts_report", type=Path)
    parser.add_argument("control_report", type=Path)
    args = parser.parse_args()
    ts = {r["round"]: r for r in json.loads(args.ts_report.read_text())["rounds"]}
    control = {r["round"]: r for r in json.loads(args.control_report.read_text())["rounds"]}
    print(
        f"{'round':>5} {'epochs':>7} {'T-S val (TTA)':>14} {'control val (TTA)':>18} {'gain, pt':>9} "
        f"{'vs round 0, pt':>15}"
    )
    base = ts[0]["val_accuracy_tta"]
    for rnd in sorted(ts):
        t = ts[rnd]["val_accuracy_tta"]
        c = control.get(rnd, {}).get("val_accuracy_tta")
        gain = f"{(t - c) * 100:+.2f}" if c is not None else "n/a"
        ctrl = f"{c:.4f}" if c is not None else "n/a"
        print(f"{rnd:>5} {ts[rnd]['epochs']:>7} {t:>14.4f} {ctrl:>18} {gain:>9} {(t - base) * 100:>+15.2f}")


if __name__ == "__main__":
    main()
