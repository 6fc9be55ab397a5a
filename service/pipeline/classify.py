"""Crop faces with the manifest's crop policy, preprocess them as the manifest says, classify in one batch."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from model_store import crop
from service.models import LoadedModel
from service.pipeline.detect import Box


def crop_face(image: np.ndarray, box: Box, margin: float, size: tuple[int, int]) -> np.ndarray:
    """The manifest's crop policy (``square_margin``, the only one), from the store's contract."""
    return crop.square_margin(image, (box.x, box.y, box.w, box.h), margin, size)


def to_model_colour(image_bgr: np.ndarray, colour: str) -> np.ndarray:
    if colour == "gray":
        return image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB) if colour == "rgb" else image_bgr


def prepare_batch(image_bgr: np.ndarray, boxes: Sequence[Box], model: LoadedModel) -> np.ndarray:
    """N×C×H×W uint8 faces laid out as the manifest's input spec says."""
    width, height = model.input_size
    if not boxes:
        return np.zeros((0, model.channels, height, width), dtype=np.uint8)
    m = model.manifest
    src = to_model_colour(image_bgr, m.input.colour)
    crops = [crop_face(src, b, m.crop_margin, (width, height)) for b in boxes]
    batch = np.stack(crops)
    if batch.ndim == 3:
        return batch[:, None, :, :]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def classify(image_bgr: np.ndarray, boxes: Sequence[Box], model: LoadedModel) -> np.ndarray:
    """N×classes probabilities, in the manifest's label order."""
    return model.predict(prepare_batch(image_bgr, boxes, model))
