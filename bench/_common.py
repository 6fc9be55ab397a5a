"""Shared by the benchmarks: a 640×480 scene with one real face (the face the service ships for
its demo, so the benchmarks need only the [service] extra)."""

from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np

from service.demo import Segment, background, render, shipped_face

ROOT = Path(__file__).resolve().parents[1]


def one_face_frame(width: int = 640, height: int = 480) -> np.ndarray:
    return render(background(width, height), shipped_face(), Segment(1.0, x=0.5, size=220), 0.0)


def one_face_jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", one_face_frame(), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")
