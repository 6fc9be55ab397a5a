"""The face-crop policy: how a face box becomes the model's input, for the trainer and the service.

It lives in the store's contract so that the crop the service cuts around a detected face is, by
construction, the crop the trainer trained on; the manifest names it (``crop_policy``) with its
``crop_margin``.
"""

from __future__ import annotations

import cv2
import numpy as np


def square_margin(image: np.ndarray, box: tuple[float, float, float, float], margin: float,
                  size: tuple[int, int]) -> np.ndarray:
    """A square crop centred on ``box`` (x, y, w, h), grown by ``margin`` of its side on each side,
    resized to ``size`` (width, height).

    Parts outside the frame are filled by replicating the border, so a face at the edge keeps its
    place in the crop instead of being shifted as a clipped crop would.
    """
    x, y, bw, bh = box
    h, w = image.shape[:2]
    side = max(bw, bh) * (1.0 + 2.0 * margin)
    cx, cy = x + bw / 2.0, y + bh / 2.0
    x0, y0 = round(cx - side / 2.0), round(cy - side / 2.0)
    x1, y1 = x0 + max(1, round(side)), y0 + max(1, round(side))
    pad = (max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w))
    crop = image[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if crop.shape[0] > size[1] else cv2.INTER_LINEAR
    return cv2.resize(crop, size, interpolation=interp)

