from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def synthetic_faces(n: int, seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy faces: each class is a bright band at its own height on a noisy background.

    Bands are mirror-symmetric, so the trainer's horizontal flips keep every label true.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    x = rng.integers(0, 60, (n, size, size)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 3 + 6 * int(c) : 8 + 6 * int(c), 8:-8] += 180
    return x.clip(0, 255).astype(np.uint8), y


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    for split, n, seed in (("train", 448, 0), ("val", 140, 1)):
        x, y = synthetic_faces(n, seed)
        votes = np.zeros((n, 10), dtype=np.uint8)
        np.savez(root / f"{split}.npz", x=x, y=y, ferplus_votes=votes)
    return root


TINY_SETS = [
    "student.stem=8", "student.widths=[16,32]", "student.depths=[1,1]", "student.strides=[2,2]",
    "round0.epochs=6", "round0.lr=0.2", "round_k.epochs=2", "batch_size=32", "threads=1",
]
