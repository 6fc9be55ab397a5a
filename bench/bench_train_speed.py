"""Training throughput of each model family on this machine: which arithmetic and layout pay.

    python bench/bench_train_speed.py [--threads 2] [--batch 128] [--steps 12]

Images per second for one training step (forward, backward, SGD with momentum), on random faces,
for each family's shape in trainer/recipes/v2.yaml, in fp32 and bf16 autocast, each with and without
channels_last. Run it on quiet cores: any other heavy process halves the figures. bf16 pays only where
the CPU has AMX tiles (``torch.cpu._is_amx_tile_supported()``): elsewhere it is emulated. The trainer's
``precision: auto`` picks per family from the same rule (trainer/train.py, ``bf16_pays``).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from trainer.config import ArchConfig, load_config
from trainer.model import build_model, count_macs, count_params

SHAPES: dict[str, dict] = {
    "EAN f48 (the student)": {"in_size": 48, "stem": 16, "widths": [32, 64, 160, 256], "depths": [1, 2, 3, 2],
                              "strides": [1, 2, 2, 2], "eca": "stage_end", "eca_from_stage": 2, "dropout": 0.1},
    "EAN s196": {"in_size": 48, "stem": 32, "widths": [48, 96, 160, 240], "depths": [2, 2, 3, 2],
                 "strides": [1, 2, 2, 2], "eca": "stage_end", "eca_from_stage": 0, "dropout": 0.1},
    "ResNet-18 at half width": {"family": "resnet", "stem": 32, "widths": [32, 64, 128, 256],
                                "depths": [2, 2, 2, 2], "strides": [1, 2, 2, 2], "dropout": 0.2},
}


def images_per_s(arch: ArchConfig, bf16: bool, channels_last: bool, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(arch).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)  # type: ignore[call-overload]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = (torch.rand(batch, 1, 48, 48) * 255).contiguous(memory_format=fmt)
    y = torch.randint(0, 7, (batch,))
    warmup = 3
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="timed steps after 3 of warm-up")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"AMX: {torch.cpu._is_amx_tile_supported()}, AVX-512: {torch.cpu._is_avx512_supported()}")
    cols = [("fp32", False, False), ("fp32, channels_last", False, True), ("bf16", True, False),
            ("bf16, channels_last", True, True)]
    print(f"| model | params | MACs | {' | '.join(c[0] for c in cols)} |")
    print(f"|---|---|---|{'---|' * len(cols)}")
    for name, shape in SHAPES.items():
        arch = load_config(None, {"student": shape}).student
        model = build_model(arch)
        figures = [f"{images_per_s(arch, bf16, cl, args.batch, args.steps):,.0f}" for _, bf16, cl in cols]
        print(f"| {name} | {count_params(model):,} | {count_macs(model) / 1e6:.1f}M | {' | '.join(figures)} |",
              flush=True)


if __name__ == "__main__":
    main()
