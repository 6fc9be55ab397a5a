"""The request bodies of the second security review (docs/security.md, "Request bodies" and "Decoding
within a budget"): each small on the wire, each built to cost the service far more than its size.
The test of the budgets and `bench/chaos.py fuzz` send the same ones."""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

WIDE = (16384, 2441)


@cache
def wide_progressive_jpeg() -> bytes:
    """16384×2441 grey at 4:4:4, progressive: 471 KB that libjpeg decodes into 240 MB of coefficients."""
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", np.full((WIDE[1], WIDE[0], 3), 128, np.uint8), params)
    assert ok
    return buf.tobytes()


@cache
def many_scans_jpeg(repeats: int = 400) -> bytes:
    """The progressive JPEG with its last scan repeated: each copy is another pass over the whole image."""
    data = wide_progressive_jpeg()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + data[-2:]


def json_flood(size: int = 10_000_000) -> bytes:
    """`[],` repeated: valid-looking JSON that json.loads turns into a million lists."""
    return b"[" + b"[]," * ((size - 3) // 3) + b"[]]"


def multipart_flood(parts: int = 200_000, boundary: str = "b") -> tuple[bytes, str]:
    """A multipart body of ``parts`` empty-named tiny parts, and its content type."""
    part = f"--{boundary}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n".encode()
    return part * parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
