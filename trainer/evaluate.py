"""Accuracy of the served graph: the ONNX file the service runs, uint8 faces in, one ``session.run``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data import LABELS, Split
from trainer.export import onnx_probs, quantize_int8


@dataclass
class ServedScore:
    accuracy: float
    confusion: np.ndarray  # (C, C) counts, rows true, columns predicted

    @property
    def per_class_recall(self) -> dict[str, float]:
        recall = self.confusion.diagonal() / np.maximum(self.confusion.sum(1), 1)
        return dict(zip(LABELS, map(float, recall), strict=True))


def served_score(onnx_path: Path, val: Split) -> ServedScore:
    pred = onnx_probs(onnx_path, val.x).argmax(1)
    confusion = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    np.add.at(confusion, (val.y, pred), 1)
    return ServedScore(float((pred == val.y).mean()), confusion)


@dataclass
class Int8Gate:
    accuracy: float
    drop: float  # FP32 minus INT8 accuracy, 0..1
    passed: bool

    def note(self, max_drop: float) -> str:
        text = f"int8 val {self.accuracy:.4f} ({-self.drop * 100:+.2f} pt)"
        return text if self.passed else f"{text}: not published, drop > {max_drop * 100:.1f} pt"


def int8_gate(fp32: Path, int8: Path, train: Split, val: Split, fp32_accuracy: float, max_drop: float,
              seed: int) -> Int8Gate:
    """Quantise (calibrated on 512 training faces) and keep it only if it loses at most ``max_drop``."""
    rng = np.random.default_rng(seed)
    quantize_int8(fp32, int8, train.x[rng.choice(len(train), min(512, len(train)), replace=False)])
    acc = served_score(int8, val).accuracy
    drop = fp32_accuracy - acc
    return Int8Gate(acc, drop, drop <= max_drop)
