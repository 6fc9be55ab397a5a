"""How strong a teacher ensemble is: each published member, and their average, on val.

    python bench/bench_ensemble.py --data DATA [--store model_store/lineage] [--name ean-teacher] [--versions 1 3 4]
    python bench/bench_ensemble.py --data DATA --members ean-teacher:1 ean-teacher:4 resnet-teacher:1

Each member runs as a round's teacher runs it (trainer/teacher.py): its ONNX graph under
onnxruntime, flip-averaged; the ensemble averages the members' log-probabilities. A student cannot
learn much from a teacher that is no better than itself, so this is the ceiling a T-S round aims at.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from model_store import ModelStore, StoreError
from trainer.config import StoreTeacherConfig
from trainer.data import DataError, load_split
from trainer.teacher import StoreEnsemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--store", default="model_store/lineage")
    parser.add_argument("--name", default="ean-teacher")
    parser.add_argument("--versions", type=int, nargs="+", help="default: every version of --name")
    parser.add_argument("--members", nargs="+", metavar="NAME:VERSION",
                        help="members of any names, instead of --name and --versions")
    parser.add_argument("--by-family", action="store_true",
                        help="also average within each model family first, then across families")
    args = parser.parse_args()
    try:
        val = load_split(args.data, "val")
        if args.members:
            refs = [ref.rpartition(":") for ref in args.members]
            if any(not name or not version.isdigit() for name, _, version in refs):
                sys.exit("error: --members takes name:version, e.g. resnet-teacher:1")
            members = [(name, int(version)) for name, _, version in refs]
        else:
            members = [(args.name, v) for v in args.versions or ModelStore(args.store).versions(args.name)]
        ensemble = StoreEnsemble([StoreTeacherConfig(store=args.store, name=n, version=v) for n, v in members],
                                 threads=torch.get_num_threads())
    except (DataError, StoreError) as exc:
        sys.exit(f"error: {exc}")
    x = torch.from_numpy(val.x[:, None]).float()
    logps = [torch.cat([m(x[i : i + 512]) for i in range(0, len(x), 512)]).numpy() for m in ensemble.members]
    print(f"{'teacher':<36} {'val, flip-averaged':>18}")
    for member, logp in zip(ensemble.members, logps, strict=True):
        stage = member.manifest.lineage.stage or ""
        print(f"{member.ref + ' ' + stage:<36} {(logp.argmax(1) == val.y).mean():>18.2%}")
    mean = np.mean(logps, axis=0)
    print(f"{'ensemble of ' + str(len(logps)):<36} {(mean.argmax(1) == val.y).mean():>18.2%}")
    if args.by_family:
        families: dict[str, list[np.ndarray]] = {}
        for member, logp in zip(ensemble.members, logps, strict=True):
            family = member.manifest.lineage.config.get("student", {}).get("family", "ean")
            families.setdefault(family, []).append(logp)
        by_family = np.mean([np.mean(f, axis=0) for f in families.values()], axis=0)
        label = "families " + "+".join(f"{k}({len(v)})" for k, v in families.items())
        print(f"{label:<36} {(by_family.argmax(1) == val.y).mean():>18.2%}")


if __name__ == "__main__":
    main()
