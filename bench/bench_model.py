"""Params, MACs and ONNX Runtime per-face latency of every shipped EAN version and two reference shapes.

    python bench/bench_model.py [--store model_store/seed] [--repeats 200]

The shipped config's student shape with each placement of the ECA gates, and the references (a
mini-Xception-shaped and a MobileNetV3-small-shaped network, both for 48×48 grayscale input and 7
classes) use random weights: latency does not depend on them. Every model is
timed at one intra-op thread, at batch 1 and batch 32, through the same uint8 → probabilities graph.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from model_store import ModelStore
from trainer.config import load_config
from trainer.export import INPUT_NAME, OUTPUT_NAME, Deployable
from trainer.model import EAN, count_macs, count_params


def _sep(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
    )


class _XceptionModule(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(c_in, c_out, 1, 2, bias=False), nn.BatchNorm2d(c_out))
        self.body = nn.Sequential(_sep(c_in, c_out), nn.ReLU(), _sep(c_out, c_out), nn.MaxPool2d(3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.residual(x)


def mini_xception(num_classes: int = 7) -> nn.Module:
    """Arriaga et al. (2017): two 3×3 convs of 8, four residual separable modules, conv head."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        *[_XceptionModule(a, b) for a, b in ((8, 16), (16, 32), (32, 64), (64, 128))],
        nn.Conv2d(128, num_classes, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class _SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        mid = max(8, c // 4)
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, mid, 1), nn.ReLU(), nn.Conv2d(mid, c, 1), nn.Hardsigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


class _InvertedResidual(nn.Module):
    def __init__(self, c_in: int, k: int, exp: int, c_out: int, se: bool, hs: bool, stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if exp != c_in:
            layers += [nn.Conv2d(c_in, exp, 1, bias=False), nn.BatchNorm2d(exp), act()]
        layers += [nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp), act()]
        if se:
            layers.append(_SE(exp))
        layers += [nn.Conv2d(exp, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def mobilenet_v3_small(num_classes: int = 7) -> nn.Module:
    """Howard et al. (2019), Table 2, with a 1-channel stem and a 7-class head."""
    cfg = [  # k, exp, out, SE, HS, stride
        (3, 16, 16, True, False, 2),
        (3, 72, 24, False, False, 2),
        (3, 88, 24, False, False, 1),
        (5, 96, 40, True, True, 2),
        (5, 240, 40, True, True, 1),
        (5, 240, 40, True, True, 1),
        (5, 120, 48, True, True, 1),
        (5, 144, 48, True, True, 1),
        (5, 288, 96, True, True, 2),
        (5, 576, 96, True, True, 1),
        (5, 576, 96, True, True, 1),
    ]
    layers: list[nn.Module] = [nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()]
    c = 16
    for k, exp, out, se, hs, s in cfg:
        layers.append(_InvertedResidual(c, k, exp, out, se, hs, s))
        c = out
    layers += [
        nn.Conv2d(c, 576, 1, bias=False),
        nn.BatchNorm2d(576),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(576, 1024),
        nn.Hardswish(),
        nn.Linear(1024, num_classes),
    ]
    return nn.Sequential(*layers)


def export(model: nn.Module, path: Path) -> None:
    torch.onnx.export(
        Deployable(model.eval()),
        (torch.zeros(1, 1, 48, 48, dtype=torch.uint8),),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=17,
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        dynamo=False,
    )


def latency_ms(path: Path, batch: int, repeats: int) -> float:
    """Median wall time per face, in milliseconds, at one intra-op thread."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (batch, 1, 48, 48), dtype=np.uint8)
    for _ in range(10):
        sess.run(None, {INPUT_NAME: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {INPUT_NAME: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000 / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="model_store/seed")
    parser.add_argument("--model", default="ean")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--config", default="trainer/configs/fer2013.yaml", help="for the ECA placement rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = ModelStore(args.store)
    stable = store.resolve(args.model, "stable")
    rows = []
    for version in store.versions(args.model):
        manifest = store.manifest(args.model, version)
        vdir = store.version_dir(args.model, version)
        tag = f"EAN v{version}{' (stable)' if version == stable else ''}"
        rows.append((tag, manifest.metrics.params, manifest.metrics.macs, vdir / manifest.model_file))
        for name, variant in manifest.variants.items():
            rows.append((f"EAN v{version} {name}", manifest.metrics.params, manifest.metrics.macs, vdir / variant.file))
    with tempfile.TemporaryDirectory() as tmp:
        # Where the ECA gates sit, on the shipped config's student shape (the v2 ablation).
        student = load_config(args.config).student
        placements = (("every block", {"eca": "every_block"}), ("stage_end from 2", {"eca": "stage_end"}),
                      ("pooled features only", {"eca": "head"}))
        shapes = [(f"student shape, ECA {tag}", lambda u=update: EAN(student.model_copy(update=u)))
                  for tag, update in placements]
        shapes += [("mini-Xception shape", mini_xception), ("MobileNetV3-small shape", mobilenet_v3_small)]
        for i, (name, factory) in enumerate(shapes):
            model = factory()
            path = Path(tmp) / f"ref{i}.onnx"
            export(model, path)
            rows.append((name, count_params(model), count_macs(model), path))
        print(f"{'model':42} {'params':>9} {'MACs':>11} {'ms/face b=1':>12} {'ms/face b=32':>13}")
        for name, params, macs, path in rows:
            b1, b32 = latency_ms(path, 1, args.repeats), latency_ms(path, 32, max(20, args.repeats // 8))
            print(f"{name:42} {params:>9,} {macs:>11,} {b1:>12.3f} {b32:>13.3f}")


if __name__ == "__main__":
    main()
