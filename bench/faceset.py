"""A labelled detection set built on the fly: real faces pasted into 640×480 real-photo frames.

Faces: FER2013 val crops (48×48 grey, read from FER2013's val split at run time, never copied into the repo) and
the astronaut's head from scikit-image (with its own hair, neck and suit around the face). Scenes:
scikit-image's face-free photographs (coffee, a cat, a rocket, coins, textures, a motorcycle, …),
cut and scaled into 640×480 frames. A FER crop is the face itself, so it is pasted with a
feathered rim of its own border pixels as context, and its box is the pasted square.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FER_VAL = ROOT.parent / "shared" / "data" / "fer2013" / "val.npz"
W, H = 640, 480
# The astronaut's face inside her head crop astronaut[0:240, 104:344]: x, y, w, h.
ASTRO_CROP = (slice(0, 240), slice(104, 344))
ASTRO_FACE = (74, 63, 89, 112)
FACE_FREE = (
    "coffee", "chelsea", "rocket", "coins", "brick", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "moon", "page", "text", "clock", "horse", "colorwheel", "retina", "cell",
    "stereo_motorcycle",
)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # BGR, H×W
    faces: tuple[tuple[int, int, int, int], ...]  # x, y, w, h
    size: int  # the pasted face width; 0 for a face-free frame


def _bgr(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        from skimage.util import img_as_ubyte

        img = img_as_ubyte(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)


def photos() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in FACE_FREE:
        img = getattr(data, name)()
        out.append(_bgr(img[0] if isinstance(img, tuple) else img))
    return out


def scene(photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A random window of a random photograph, scaled to cover 640×480, maybe mirrored."""
    src = photos[rng.integers(len(photos))]
    h, w = src.shape[:2]
    zoom = rng.uniform(1.0, 1.6)
    cw, ch = min(w, round(w / zoom)), min(h, round(h / zoom))
    if cw / ch > W / H:
        cw = round(ch * W / H)
    else:
        ch = round(cw * H / W)
    x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    out = cv2.resize(src[y0 : y0 + ch, x0 : x0 + cw], (W, H), interpolation=cv2.INTER_AREA)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def _paste(frame: np.ndarray, patch: np.ndarray, x: int, y: int, rim: int) -> None:
    """Alpha-blend ``patch`` at (x, y) with a ``rim``-pixel feathered edge, so no hard square shows."""
    ph, pw = patch.shape[:2]
    alpha = np.ones((ph, pw), np.float32)
    if rim > 0:
        ramp = np.minimum(np.arange(pw), np.arange(pw)[::-1])[None, :]
        ramp = np.minimum(ramp, np.minimum(np.arange(ph), np.arange(ph)[::-1])[:, None])
        alpha = np.clip(ramp / rim, 0, 1).astype(np.float32)
    region = frame[y : y + ph, x : x + pw].astype(np.float32)
    frame[y : y + ph, x : x + pw] = (alpha[..., None] * patch + (1 - alpha[..., None]) * region).astype(np.uint8)


def fer_face(face48: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The 48×48 crop at ``size`` px, with a quarter of its width of mirrored border around it."""
    margin = 12
    grown = cv2.copyMakeBorder(face48, margin, margin, margin, margin, cv2.BORDER_REFLECT)
    side = round(size * grown.shape[0] / 48)
    img = cv2.resize(grown, (side, side), interpolation=cv2.INTER_AREA if side < grown.shape[0] else cv2.INTER_CUBIC)
    return _bgr(img), round(margin * size / 48)


def faces_and_frames(
    n_per_size: int = 40, sizes: tuple[int, ...] = (40, 56, 80, 120, 160, 200), n_free: int = 40, seed: int = 0
) -> Iterator[Sample]:
    from skimage import data

    rng = np.random.default_rng(seed)
    pics = photos()
    fer = np.load(FER_VAL)["x"]
    astro = _bgr(data.astronaut())[ASTRO_CROP]
    picks = rng.choice(len(fer), size=n_per_size * len(sizes), replace=False)
    k = 0
    for size in sizes:
        for i in range(n_per_size):
            frame = scene(pics, rng)
            if i % 10 == 9:  # one in ten is the astronaut, whose head brings real context
                scale = size / ASTRO_FACE[2]
                side = round(astro.shape[0] * scale)
                patch = cv2.resize(astro, (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
                fx, fy, fw, fh = (round(v * scale) for v in ASTRO_FACE)
                x = int(rng.integers(-fx, W - fx - fw + 1))
                y = int(rng.integers(-fy, H - fy - fh + 1))
                x0, y0 = max(x, 0), max(y, 0)
                x1, y1 = min(x + side, W), min(y + side, H)
                _paste(frame, patch[y0 - y : y1 - y, x0 - x : x1 - x], x0, y0, 0)
                box = (x + fx, y + fy, fw, fh)
            else:
                patch, margin = fer_face(fer[picks[k]], size)
                x = int(rng.integers(0, W - patch.shape[1] + 1))
                y = int(rng.integers(0, H - patch.shape[0] + 1))
                _paste(frame, patch, x, y, max(2, margin))
                box = (x + margin, y + margin, size, size)
            k += 1
            yield Sample(frame, (box,), size)
    for _ in range(n_free):
        yield Sample(scene(pics, rng), (), 0)

