"""Params, MACs, served accuracy and ONNX Runtime per-face latency: every shipped EAN version, the
shape front's runs (``ean-teacher``, one row per recipe stage) and two reference shapes, in one run.

    python bench/bench_model.py [--store model_store/seed] [--lineage model_store/lineage] [--repeats 200]

The shipped config's student shape with each placement of the ECA gates, and the references (a
mini-Xception-shaped and a MobileNetV3-small-shaped network, both for 48×48 grayscale input and 7
classes) use random weights: latency does not depend on them. Every model is
timed at one intra-op thread, at batch 1 and batch 32, through the same uint8 → probabilities graph.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from model_store import ModelStore
from trainer.config import load_config
from trainer.export import INPUT_NAME, OUTPUT_NAME, Deployable
from trainer.model import EAN, EANConfig, count_macs, count_params


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


def _student(student: EANConfig, update: dict) -> nn.Module:
    return EAN(student.model_copy(update=update))


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


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def latencies_ms(paths: list[Path], batch: int, repeats: int, rounds: int = 5) -> list[float]:
    """Median wall time per face, in milliseconds, at one intra-op thread, for each graph.

    The graphs take turns, ``rounds`` blocks of ``repeats / rounds`` runs each, so a host that slows
    down or speeds up during the run moves every row alike and the ratios between rows hold.
    """
    sessions = [_session(p) for p in paths]
    x = np.random.default_rng(0).integers(0, 256, (batch, 1, 48, 48), dtype=np.uint8)
    for sess in sessions:
        for _ in range(10):
            sess.run(None, {INPUT_NAME: x})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for sess, out in zip(sessions, times, strict=True):
            for _ in range(max(1, repeats // rounds)):
                t0 = time.perf_counter()
                sess.run(None, {INPUT_NAME: x})
                out.append(time.perf_counter() - t0)
    return [float(np.median(t)) * 1000 / batch for t in times]


def _versions(store: ModelStore, name: str, tag: str) -> list[tuple[str, int, int, float | None, Path]]:
    """(name, params, MACs, served val accuracy, graph) of each version of ``name`` and its variants."""
    if name not in store.models():
        return []
    stable = store.aliases(name).get("stable")
    rows = []
    for version in store.versions(name):
        m = store.manifest(name, version)
        vdir = store.version_dir(name, version)
        acc = None if m.metrics.tta else m.metrics.val_accuracy  # a TTA figure is not what the service runs
        label = tag.format(v=version, stage=m.lineage.stage or "")
        label += " (stable)" if version == stable and name == "ean" else ""  # what a gateway serves
        rows.append((label, m.metrics.params, m.metrics.macs, acc, vdir / m.model_file))
        for vname, variant in m.variants.items():
            shown = None if m.metrics.tta else variant.val_accuracy
            rows.append((f"{label} {vname}", m.metrics.params, m.metrics.macs, shown, vdir / variant.file))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="model_store/seed")
    parser.add_argument("--model", default="ean")
    parser.add_argument("--lineage", default="model_store/lineage", help="the store of the recipe's stages")
    parser.add_argument("--front", default="ean-teacher", help="the lineage store's name of the shape front's runs")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--config", default="trainer/configs/fer2013.yaml", help="for the ECA placement rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = ModelStore(args.store)
    rows = _versions(store, args.model, "EAN v{v}")
    if Path(args.lineage).is_dir():
        rows += _versions(ModelStore(args.lineage), args.front, "{stage} ({v})")
    with tempfile.TemporaryDirectory() as tmp:
        # Where the ECA gates sit, on the shipped config's student shape (the v2 ablation).
        student = load_config(args.config).student
        if not isinstance(student, EANConfig):
            sys.exit(f"error: {args.config} trains a {student.family}, not an EAN student")
        placements = (("every block", {"eca": "every_block"}), ("stage_end from 2", {"eca": "stage_end"}),
                      ("pooled features only", {"eca": "head"}))
        shapes: list[tuple[str, Callable[[], nn.Module]]] = [
            (f"small student shape, ECA {tag}", functools.partial(_student, student, update))
            for tag, update in placements
        ]
        shapes += [("mini-Xception shape", mini_xception), ("MobileNetV3-small shape", mobilenet_v3_small)]
        for i, (name, factory) in enumerate(shapes):
            model = factory()
            path = Path(tmp) / f"ref{i}.onnx"
            export(model, path)
            rows.append((name, count_params(model), count_macs(model), None, path))
        paths = [r[4] for r in rows]
        b1 = latencies_ms(paths, 1, args.repeats)
        b32 = latencies_ms(paths, 32, max(20, args.repeats // 8))
    xception = b1[[r[0] for r in rows].index("mini-Xception shape")]
    print(f"{'model':46} {'params':>9} {'MACs':>11} {'served val':>10} {'ms/face b=1':>12} {'ms/face b=32':>13} "
          f"{'vs mini-Xception':>17}")
    for (name, params, macs, acc, _), t1, t32 in zip(rows, b1, b32, strict=True):
        shown = f"{acc:.2%}" if acc is not None else "–"
        print(f"{name:46} {params:>9,} {macs:>11,} {shown:>10} {t1:>12.3f} {t32:>13.3f} {xception / t1:>16.2f}×")


if __name__ == "__main__":
    main()
