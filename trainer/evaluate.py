"""Accuracy of the served graph: the ONNX file the service runs, uint8 faces in, one ``session.run``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.config import TrainConfig
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
    agreement: float  # share of faces whose top label is the float graph's
    max_score_shift: float  # largest change of the float graph's top label's probability
    passed: bool

    def note(self) -> str:
        return (f"int8 val {self.accuracy:.4f} ({-self.drop * 100:+.2f} pt), top label as float on "
                f"{self.agreement:.2%} of faces, top score moved at most {self.max_score_shift:.3f}")


def int8_gate(fp32: Path, int8: Path, train: Split, val: Split, cfg: TrainConfig) -> Int8Gate:
    """Quantise (calibrated on training faces) and keep it only if it behaves as the float graph does.

    Accuracy alone can hide a variant that answers differently on many faces whose errors cancel
    out, so the gate also bounds how often the top label changes and how far its score moves.
    """
    rng = np.random.default_rng(cfg.seed)
    quantize_int8(fp32, int8, train.x[rng.choice(len(train), min(512, len(train)), replace=False)])
    p32, p8 = onnx_probs(fp32, val.x), onnx_probs(int8, val.x)
    top = p32.argmax(1)
    rows = np.arange(len(top))
    acc32, acc8 = float((top == val.y).mean()), float((p8.argmax(1) == val.y).mean())
    agreement = float((p8.argmax(1) == top).mean())
    shift = float(np.abs(p8[rows, top] - p32[rows, top]).max())
    passed = acc32 - acc8 <= cfg.max_int8_drop and agreement >= cfg.min_int8_agreement and \
        shift <= cfg.max_int8_score_shift
    return Int8Gate(acc8, acc32 - acc8, agreement, shift, passed)
