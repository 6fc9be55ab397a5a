"""Frames with a real face, and their encodings.

Two faces of the same person (the astronaut of scikit-image, Eileen Collins, public domain): the tests
paste the full photograph's head (scikit-image, in the dev extra), whose face position they know to
the pixel; the benchmarks paste the 160×160 JPEG the service ships for its demo, so that they need
only the [service] extra.
"""

from __future__ import annotations

import cv2
import numpy as np

from service.demo import Segment, background, render, shipped_face

# The astronaut's face inside face_crop(), as YuNet and yuface box it: x, y, w, h.
FACE_IN_CROP = (74, 63, 89, 112)


def encode(image: np.ndarray, ext: str = ".jpg", params: list[int] | None = None) -> bytes:
    """``image`` (BGR) encoded as ``ext``; ``params`` as cv2.imencode takes them (e.g. JPEG quality)."""
    ok, buf = cv2.imencode(ext, image, params or [])
    assert ok, f"cv2 cannot encode {ext}"
    return buf.tobytes()


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def face_crop() -> np.ndarray:
    """The astronaut's head with some margin, as the clips paste it."""
    return astronaut_bgr()[0:240, 104:344].copy()


def one_face_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A 640×480 scene with exactly one real face."""
    return render(background(width, height), face_crop(), Segment(1.0, x=0.5, size=220), 0.0)


def pasted_face_frame(
    face_width: int, x: int = 320, y: int = 240, width: int = 640, height: int = 480
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The astronaut's head pasted into a face-free 640×480 scene so that her face is ``face_width``
    pixels wide and centred on (x, y); returns the frame and where the face is."""
    frame = background(width, height)
    crop = face_crop()
    scale = face_width / FACE_IN_CROP[2]
    side = round(crop.shape[0] * scale)
    head = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    fx, fy, fw, fh = (round(v * scale) for v in FACE_IN_CROP)
    left, top = x - fx - fw // 2, y - fy - fh // 2
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    frame[y0:y1, x0:x1] = head[y0 - top : y1 - top, x0 - left : x1 - left]
    return frame, (left + fx, top + fy, fw, fh)


def demo_face_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A 640×480 scene with one real face, the service's shipped demo face: the benchmarks' frame."""
    return render(background(width, height), shipped_face(), Segment(1.0, x=0.5, size=220), 0.0)


def demo_face_jpeg() -> bytes:
    return encode(demo_face_frame(), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])


def lying_png() -> bytes:
    """A valid 1×1 PNG whose IDAT length field claims 0x6a00000c bytes (67 bytes in all): OpenCV's
    decoder allocated about 1.7 GB for it before failing."""
    png = bytearray(encode(np.zeros((1, 1, 3), np.uint8), ".png"))
    if png[37:41] != b"IDAT":
        raise RuntimeError("OpenCV's PNG encoder no longer puts IDAT right after IHDR")
    png[33:37] = (0x6A00000C).to_bytes(4, "big")
    return bytes(png)
