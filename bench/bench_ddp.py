"""Training throughput of 1 and N data-parallel processes (torchrun, gloo on CPU, nccl on GPU).

    python bench/bench_ddp.py --data data/fer2013 [--epochs 1] [--procs 1 2]

Each run trains the shipped student's round 0 (cross-entropy) from the shipped config, and reports
the images per second of its last epoch. With N processes on C cores each gets C/N threads, so the
figures compare one process against N on the same hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default=str(REPO / "trainer" / "configs" / "fer2013.yaml"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{'processes':>9} {'threads each':>12} {'images/s':>9}")
    for n in args.procs:
        threads = max(1, cores // n)
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", "trainer", "fit", "--data", args.data, "--config", args.config, "--rounds", "0",
                   "--out", out, "--set", "teacher_store=null", "--set", f"round0.epochs={args.epochs}",
                   "--set", f"threads={threads}", "--set", "quantize=false"]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if proc.returncode != 0:  # the trainer's own one-line error, not torchrun's traceback around it
                errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
                sys.exit(errors[0] if errors else f"error: the trainer failed:\n{proc.stderr[-2000:]}")
            history = json.loads((Path(out) / "rounds.json").read_text())[0]["history"]
            print(f"{n:>9} {threads:>12} {history[-1]['images_per_s']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
