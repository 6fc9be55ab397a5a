"""How closely an INT8 graph follows its float graph, for the quantisation settings the trainer chose from.

    python bench/bench_int8.py --data DATA [--store model_store/lineage] [--model ean-teacher:5]

Each row quantises the version's float graph (static QDQ, per-channel weights, calibrated on 512
training faces, as ``publish`` does) and scores both graphs on val: accuracy, the share of faces
whose top label is the float graph's, and how far the float graph's top score moves, at most and at
the 99th percentile. The gate (trainer/config.py) keeps an INT8 variant only at >= 99% agreement and
a largest move <= 0.15.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from model_store import ModelStore, StoreError
from trainer.data import DataError, load_split
from trainer.export import onnx_probs, quantize_int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--store", default="model_store/lineage")
    parser.add_argument("--model", default="ean-teacher:5", help="name:version in --store")
    parser.add_argument("--faces", type=int, default=512, help="calibration faces, drawn from train")
    args = parser.parse_args()
    name, _, version = args.model.rpartition(":")
    try:
        store = ModelStore(args.store)
        vdir = store.version_dir(name, int(version))
        fp32 = vdir / store.manifest(name, int(version)).model_file
        train, val = load_split(args.data, "train"), load_split(args.data, "val")
    except (DataError, StoreError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    calibration = train.x[np.random.default_rng(1).choice(len(train), args.faces, replace=False)]
    p32 = onnx_probs(fp32, val.x)
    top, rows = p32.argmax(1), np.arange(len(val.y))
    print(f"{args.model}: float graph val {(top == val.y).mean():.2%}")
    print(f"{'int8 setting':<26} {'val':>7} {'agreement':>10} {'max shift':>10} {'p99 shift':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, stem_in_float in (("every layer quantised", False), ("stem in float (shipped)", True)):
            int8 = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, int8, calibration, stem_in_float=stem_in_float)
            p8 = onnx_probs(int8, val.x)
            shift = np.abs(p8[rows, top] - p32[rows, top])
            print(f"{label:<26} {(p8.argmax(1) == val.y).mean():>7.2%} {(p8.argmax(1) == top).mean():>10.2%} "
                  f"{shift.max():>10.3f} {np.quantile(shift, 0.99):>10.3f}")


if __name__ == "__main__":
    main()
