"""The whole trainer on data it makes itself, in about a minute: see the pipeline before FER2013 is at hand.

    python -m trainer smoke [--out runs/smoke]

It writes a toy dataset (each class a bright band at its own height), trains a tiny EAN for round 0
and one teacher-student round, exports it, writes the reports and publishes it into
``<out>/store``, which ``FER_MODEL__STORE=<out>/store make run`` serves. The model recognises bands,
not faces: it shows the pipeline, never an accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.config import load_config
from trainer.data import load_split
from trainer.publish import publish_run
from trainer.train import fit

# A model of a few thousand parameters: seconds an epoch on one core.
TINY_SETS = {
    "student.stem": 8, "student.widths": [16, 32], "student.depths": [1, 1], "student.strides": [2, 2],
    "round0.epochs": 6, "round0.lr": 0.2, "round_k.epochs": 2, "batch_size": 32, "threads": 1,
}


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


def write_dataset(root: Path, n_train: int = 448, n_val: int = 140) -> Path:
    """``train.npz`` and ``val.npz`` in the layout of FER2013's (x, y, ferplus_votes)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1)):
        x, y = synthetic_faces(n, seed)
        np.savez(root / f"{split}.npz", x=x, y=y, ferplus_votes=np.zeros((n, 10), dtype=np.uint8))
    return root


def smoke(out: Path) -> int:
    data = write_dataset(out / "data")
    run = out / "run"
    run.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, {**TINY_SETS, "round0.epochs": 15, "round_k.epochs": 5, "rounds": 1})
    train, val = load_split(data, "train"), load_split(data, "val")
    fit(train, val, cfg, run)
    store = out / "store"
    version = publish_run(run, train, val, cfg, store=str(store), force_promote=False, data_name="smoke")
    print(f"smoke run done: {cfg.model_name} v{version} in {store}; serve it with FER_MODEL__STORE={store} make run")
    return 0
