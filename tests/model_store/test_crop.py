"""The crop policy of the store's contract: the service's crop of a face box is the trainer's input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model_store import crop

VAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "fer2013" / "val.npz"


def _face() -> np.ndarray:
    if VAL.exists():
        return np.load(VAL)["x"][7]
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 255, (48, 48), dtype=np.uint8), (5, 5), 0)


def _box_whose_crop_is_all_of(side: int, margin: float) -> tuple[float, float, float, float]:
    """The face box whose ``square_margin`` crop is the whole ``side``×``side`` image."""
    inner = side / (1.0 + 2.0 * margin)
    off = (side - inner) / 2.0
    return (off, off, inner, inner)


@pytest.mark.parametrize("margin", [0.0, 0.2, 0.35])
def test_the_service_crop_of_a_framed_face_is_the_training_image(margin: float) -> None:
    """A training face placed in a camera frame at 3x, cut around its box the service's way, comes
    back as the training image: one policy, so the classifier sees at serving what it saw in training."""
    face = _face()
    big = cv2.resize(face, (144, 144), interpolation=cv2.INTER_LINEAR)
    frame = np.full((480, 640), 90, np.uint8)
    frame[200:344, 300:444] = big
    x, y, w, h = _box_whose_crop_is_all_of(144, margin)
    got = crop.square_margin(frame, (300 + x, 200 + y, w, h), margin, (48, 48))
    assert np.abs(got.astype(int) - face.astype(int)).mean() < 4.0
    # A policy that squares differently (a margin other than the manifest's) does not round-trip.
    other = crop.square_margin(frame, (300 + x, 200 + y, w, h), margin + 0.15, (48, 48))
    assert np.abs(other.astype(int) - face.astype(int)).mean() > 8.0

