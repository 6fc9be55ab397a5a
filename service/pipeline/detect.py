"""Face detectors behind one small interface.

The default is YuNet under onnxruntime (`kind: yunet`, service/pipeline/yunet.py) with the model
the service ships: about 25 times faster than the Haar cascade on a 640×480 frame and better at
every face size (bench/bench_detect.py). `kind: opencv_yunet` runs a user's own YuNet file through
cv2.FaceDetectorYN; `kind: haar` is OpenCV's bundled frontal-face cascade (opencv-python-headless
4.x ships it in cv2.data; 5.x dropped it, hence the <5 pin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from service.config import DetectorConfig
from service.pipeline.yunet import BUNDLED_MODEL, YuNetSession


@dataclass(frozen=True, slots=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    score: float | None = None

    @property
    def area(self) -> int:
        return self.w * self.h


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Box]:
        """Faces in a BGR image, in that image's pixel coordinates."""
        ...


class DetectorError(Exception):
    pass


class HaarDetector:
    def __init__(self, cfg: DetectorConfig) -> None:
        path = cfg.haar_cascade or Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]  # cv2.data has no stub
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise DetectorError(f"cannot load Haar cascade {str(path)!r}")
        self._scale = cfg.scale_factor
        self._neighbors = cfg.min_neighbors
        self._min = cfg.min_face

    def detect(self, image: np.ndarray) -> list[Box]:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=self._scale, minNeighbors=self._neighbors, minSize=(self._min, self._min)
        )
        return [Box(int(x), int(y), int(w), int(h)) for x, y, w, h in found]


class YuNetDetector:
    """YuNet under onnxruntime; its own session, so one instance per thread."""

    def __init__(self, cfg: DetectorConfig) -> None:
        model = cfg.yunet_model or BUNDLED_MODEL
        if not Path(model).is_file():
            raise DetectorError(f"YuNet model {str(model)!r} does not exist")
        try:
            self._session = YuNetSession(Path(model), threads=cfg.threads)
        except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
            raise DetectorError(f"cannot load YuNet model {str(model)!r}: {exc}") from None
        self._threshold = cfg.score_threshold
        self._min = cfg.min_face

    def detect(self, image: np.ndarray) -> list[Box]:
        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        h, w = bgr.shape[:2]
        boxes = []
        for f in self._session.detect(bgr, self._threshold):
            x, y = max(round(f.x), 0), max(round(f.y), 0)
            bw, bh = min(round(f.x + f.w), w) - x, min(round(f.y + f.h), h) - y
            if min(bw, bh) >= self._min:
                boxes.append(Box(x, y, bw, bh, f.score))
        return boxes


class OpenCvYuNetDetector:
    def __init__(self, cfg: DetectorConfig) -> None:
        if cfg.yunet_model is None or not Path(cfg.yunet_model).is_file():
            raise DetectorError(f"YuNet model {str(cfg.yunet_model)!r} does not exist")
        try:
            self._net = cv2.FaceDetectorYN.create(str(cfg.yunet_model), "", (320, 240), cfg.score_threshold)
        except cv2.error as exc:
            raise DetectorError(f"cannot load YuNet model {str(cfg.yunet_model)!r}: {exc}") from None
        self._size: tuple[int, int] = (320, 240)
        self._min = cfg.min_face

    def detect(self, image: np.ndarray) -> list[Box]:
        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        size = (bgr.shape[1], bgr.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, faces = self._net.detect(bgr)
        if faces is None:
            return []
        boxes = []
        for row in faces:
            x, y, w, h = (round(float(v)) for v in row[:4])
            if min(w, h) >= self._min:
                boxes.append(Box(max(x, 0), max(y, 0), w, h, float(row[-1])))
        return boxes


def make_detector(cfg: DetectorConfig) -> FaceDetector:
    """A new detector; instances are not shared between threads."""
    kind = cfg.resolved_kind
    if kind == "yunet":
        return YuNetDetector(cfg)
    if kind == "opencv_yunet":
        return OpenCvYuNetDetector(cfg)
    return HaarDetector(cfg)


def detect_scaled(detector: FaceDetector, image: np.ndarray, max_w: int, max_h: int) -> list[Box]:
    """Detect on a copy scaled to fit max_w×max_h and map boxes back to ``image`` coordinates."""
    h, w = image.shape[:2]
    scale = min(max_w / w, max_h / h, 1.0)
    if scale >= 1.0:
        return detector.detect(image)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    inv = 1.0 / scale
    out = []
    for b in detector.detect(small):
        x, y = round(b.x * inv), round(b.y * inv)
        bw, bh = min(round(b.w * inv), w - x), min(round(b.h * inv), h - y)
        if bw > 0 and bh > 0:
            out.append(Box(x, y, bw, bh, b.score))
    return out
