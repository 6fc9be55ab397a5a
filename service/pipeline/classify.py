"""Crop faces with the manifest's margin, preprocess them as the manifest says, classify in one batch."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from service.models import LoadedModel
from service.pipeline.detect import Box


def crop_face(image: np.ndarray, box: Box, margin: float, size: tuple[int, int]) -> np.ndarray:
    """A square crop centred on the box, grown by ``margin`` of its side on each side, resized.

    Parts outside the frame are filled by replicating the border, so a face at the edge keeps its
    place in the crop instead of being shifted as a clipped crop would.
    """
    h, w = image.shape[:2]
    side = max(box.w, box.h) * (1.0 + 2.0 * margin)
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    x0, y0 = round(cx - side / 2.0), round(cy - side / 2.0)
    x1, y1 = x0 + max(1, round(side)), y0 + max(1, round(side))
    pad = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    crop = image[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if crop.shape[0] > size[1] else cv2.INTER_LINEAR
    return cv2.resize(crop, size, interpolation=interp)


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
    src = to_model_colour(image_bgr, model.manifest.input.colour)
    crops = [crop_face(src, b, model.manifest.crop_margin, (width, height)) for b in boxes]
    batch = np.stack(crops)
    if batch.ndim == 3:
        return batch[:, None, :, :]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def classify(image_bgr: np.ndarray, boxes: Sequence[Box], model: LoadedModel) -> np.ndarray:
    """N×classes probabilities, in the manifest's label order."""
    return model.predict(prepare_batch(image_bgr, boxes, model))
