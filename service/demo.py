"""A short clip of a real face, generated at start-up, so `make run` shows events without a camera.

The same writer builds the test clips: a script of segments (face shown or not, where, how big,
mirrored, lighter or darker), rendered onto a static background and saved as MJPEG, which
OpenCV writes and reads without FFmpeg.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

DEMO_FILE = "demo-v1.avi"
# Package data, as the shipped YuNet model is: the installed service reads it from beside this module.
FACE_FILE = Path(__file__).resolve().parent / "assets" / "demo" / "face.jpg"


@dataclass(frozen=True)
class Segment:
    seconds: float
    face: bool = True
    x: float = 0.5
    x_end: float | None = None
    y: float = 0.45
    size: int = 200
    flip: bool = False
    gain: float = 1.0


# Faces come and go, so each appearance is a new track with its own expression events, and the
# changed pose and light give the model something different to say.
DEMO_SCRIPT: tuple[Segment, ...] = (
    Segment(1.0, face=False),
    Segment(5.0, x=0.35, x_end=0.55),
    Segment(1.5, face=False),
    Segment(5.0, x=0.6, x_end=0.45, size=230, flip=True, gain=0.8),
    Segment(1.5, face=False),
    Segment(4.0, x=0.5, size=170, gain=1.2),
)


def shipped_face() -> np.ndarray:
    """The demo's 160×160 face (BGR); service/assets/demo/SOURCE.md says where it comes from."""
    face = cv2.imdecode(np.frombuffer(FACE_FILE.read_bytes(), dtype=np.uint8), cv2.IMREAD_COLOR)
    if face is None:  # pragma: no cover - the file is part of the package
        raise RuntimeError(f"the shipped demo face {FACE_FILE} does not decode")
    return face


def background(width: int, height: int) -> np.ndarray:
    """A static, smooth scene: gradients and a few soft shapes, nothing a detector takes for a face."""
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    base = 70 + 60 * xs + 40 * ys
    img = np.stack([base * 0.9, base, base * 1.1], axis=-1).clip(0, 255).astype(np.uint8)
    cv2.rectangle(img, (int(width * 0.05), int(height * 0.6)), (int(width * 0.25), height), (60, 70, 80), -1)
    top_right = ((int(width * 0.8), int(height * 0.1)), (int(width * 0.95), int(height * 0.5)))
    cv2.rectangle(img, *top_right, (150, 140, 120), -1)
    return cv2.GaussianBlur(img, (9, 9), 0)


def render(bg: np.ndarray, face: np.ndarray, seg: Segment, progress: float) -> np.ndarray:
    frame = bg.copy()
    if not seg.face:
        return frame
    h, w = frame.shape[:2]
    size = min(seg.size, h, w)
    img = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA if size < face.shape[0] else cv2.INTER_LINEAR)
    if seg.flip:
        img = img[:, ::-1]
    if seg.gain != 1.0:
        img = cv2.convertScaleAbs(img, alpha=seg.gain, beta=0)
    cx = seg.x if seg.x_end is None else seg.x + (seg.x_end - seg.x) * progress
    x0 = int(np.clip(cx * w - size / 2, 0, w - size))
    y0 = int(np.clip(seg.y * h - size / 2, 0, h - size))
    frame[y0 : y0 + size, x0 : x0 + size] = img
    return frame


def write_clip(
    path: Path, face: np.ndarray, script: Sequence[Segment], *, fps: float = 15.0, size: tuple[int, int] = (640, 480)
) -> Path:
    """Render ``script`` to ``path`` (MJPEG AVI), written to a temporary name and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {str(tmp)!r}")
    bg = background(*size)
    try:
        for seg in script:
            n = max(1, round(seg.seconds * fps))
            for i in range(n):
                writer.write(render(bg, face, seg, i / max(1, n - 1)))
    finally:
        writer.release()
    os.replace(tmp, path)
    return path


def ensure_demo_clip(state_dir: Path) -> Path:
    path = Path(state_dir) / DEMO_FILE
    if not path.is_file():
        write_clip(path, shipped_face(), DEMO_SCRIPT)
        logger.info("generated the demo clip %s", path)
    return path
