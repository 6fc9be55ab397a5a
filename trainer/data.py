"""Datasets: FER2013 ``.npz`` splits, the Kaggle ``fer2013.csv`` and ``<split>/<class>/*`` folders.

Classes are always mapped by name into one canonical order, never by index, so RAF-DB (whose
basic set orders its classes differently) and FER2013 land on the same output layout.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model_store import crop

# The canonical output order: FER2013's. It reaches the service through the manifest only.
LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

_SYNONYMS = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
}
# The class order of FER2013's integer labels (npz and csv), and of the FER+ vote columns.
FER2013_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_ORDER = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
_CSV_SPLITS = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class DataError(Exception):
    """A dataset problem a user can fix; the message names the file or class."""


def class_index(name: str) -> int:
    """The canonical index of a class name, accepting common synonyms (RAF-DB's, FER+'s)."""
    key = name.strip().lower()
    key = _SYNONYMS.get(key, key)
    try:
        return LABELS.index(key)
    except ValueError:
        raise DataError(f"unknown class name {name!r}; known: {', '.join(LABELS)}") from None


def remap(order: tuple[str, ...] | list[str]) -> np.ndarray:
    """Index map from a source's class order to the canonical one."""
    return np.array([class_index(n) for n in order], dtype=np.int64)


@dataclass
class Split:
    x: np.ndarray  # (N, S, S) uint8 grayscale
    y: np.ndarray  # (N,) int64, canonical indices
    votes: np.ndarray | None = None  # (N, C) float32 crowd-vote distribution; zero rows: none
    source: str = ""

    def __len__(self) -> int:
        return len(self.y)


def _check(split: Split, size: int, where: str) -> Split:
    if len(split) == 0:
        raise DataError(f"{where}: the split is empty")
    if split.x.ndim != 3 or split.x.shape[1:] != (size, size) or split.x.dtype != np.uint8:
        raise DataError(
            f"{where}: expected uint8 images of shape (N, {size}, {size}), "
            f"got {split.x.dtype} {tuple(split.x.shape)}"
        )
    if split.x.shape[0] != len(split.y):
        raise DataError(f"{where}: {split.x.shape[0]} images but {len(split.y)} labels")
    return split


def _ferplus_votes(raw: np.ndarray) -> np.ndarray:
    votes = np.zeros((len(raw), len(LABELS)), dtype=np.float32)
    votes[:, remap(FERPLUS_ORDER)] = raw[:, : len(FERPLUS_ORDER)]
    total = votes.sum(1, keepdims=True)
    return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


def _load_npz(path: Path, size: int) -> Split:
    with np.load(path) as f:
        if "x" not in f or "y" not in f:
            raise DataError(f"{path}: needs arrays 'x' and 'y'")
        x, y = f["x"], f["y"].astype(np.int64)
        votes = _ferplus_votes(f["ferplus_votes"]) if "ferplus_votes" in f else None
    if y.size and (y.min() < 0 or y.max() >= len(FER2013_ORDER)):
        raise DataError(f"{path}: label {int(y.max())} is outside FER2013's 7 classes")
    return _check(Split(x, remap(FER2013_ORDER)[y], votes, str(path)), size, str(path))


def _load_csv(path: Path, split: str, size: int) -> Split:
    usage = _CSV_SPLITS.get(split)
    if usage is None:
        raise DataError(f"{path}: unknown split {split!r}; use one of {', '.join(_CSV_SPLITS)}")
    xs, ys = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            if row["Usage"] != usage:
                continue
            pixels = np.array(row["pixels"].split(), dtype=np.uint8)
            if pixels.size != size * size:
                raise DataError(f"{path}:{line}: {pixels.size} pixels, expected {size * size}")
            xs.append(pixels.reshape(size, size))
            ys.append(int(row["emotion"]))
    if not ys:
        raise DataError(f"{path}: no rows with Usage {usage!r}")
    y = np.array(ys, dtype=np.int64)
    if y.min() < 0 or y.max() >= len(FER2013_ORDER):
        raise DataError(f"{path}: emotion {int(y.max())} is outside FER2013's 7 classes")
    return _check(Split(np.stack(xs), remap(FER2013_ORDER)[y], None, str(path)), size, str(path))


def _load_folders(root: Path, size: int) -> Split:
    xs, ys = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = class_index(class_dir.name)
        for img_path in sorted(class_dir.iterdir()):
            if img_path.suffix.lower() not in _IMAGE_EXTS:
                continue
            img = cv2.imread(str(img_path), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DataError(f"{img_path}: not a readable image")
            if img.shape != (size, size):
                # An image in a folder is a face crop: squared the way the service squares a face box.
                img = crop.square_margin(img, (0, 0, img.shape[1], img.shape[0]), 0.0, (size, size))
            xs.append(img)
            ys.append(label)
    if not ys:
        raise DataError(f"{root}: no images under <class>/ folders")
    return _check(Split(np.stack(xs), np.array(ys, dtype=np.int64), None, str(root)), size, str(root))


def load_split(data: str | Path, split: str, size: int = 48) -> Split:
    """Load ``split`` (train, val, test) from a directory in any of the supported layouts."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data directory {str(root)!r} does not exist. FER2013 is not shipped: docs/training.md "
                        "says where it and the FER+ votes come from and which layouts this loader takes; "
                        "`python -m trainer smoke` runs the whole pipeline on toy data meanwhile")
    if (root / f"{split}.npz").is_file():
        return _load_npz(root / f"{split}.npz", size)
    if (root / "fer2013.csv").is_file():
        return _load_csv(root / "fer2013.csv", split, size)
    if (root / split).is_dir():
        return _load_folders(root / split, size)
    raise DataError(f"{root}: no {split}.npz, fer2013.csv or {split}/<class>/ folders")
