"""YuNet under onnxruntime: the default face detector.

The graph (service/assets/yunet/yunet_n.onnx, built by `python -m tools.yunet.build`) ends at the
per-stride head outputs; the anchor-free decoding and NMS are here, as in libfacedetection and
cv2.FaceDetectorYN. onnxruntime runs the graph faster than OpenCV's DNN module does
(bench/bench_detect.py), given its default ORT_ENABLE_ALL optimisation: the NCHWc layout
transform at that level is most of the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "yunet" / "yunet_n.onnx"
STRIDES = (8, 16, 32)
_PAD = 32  # the deepest stride: the input's sides are padded up to a multiple of it


@dataclass(frozen=True, slots=True)
class RawFace:
    """A detection in the coordinates of the image given to `YuNetSession.detect`."""

    x: float
    y: float
    w: float
    h: float
    score: float
    landmarks: np.ndarray  # (5, 2): right eye, left eye, nose tip, right and left mouth corner


class YuNetSession:
    """One onnxruntime session; `detect` is safe to call from one thread at a time."""

    def __init__(self, model: Path = BUNDLED_MODEL, *, threads: int = 1, nms_threshold: float = 0.3) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Spinning worker threads steal the cores that the other cameras and requests need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self._input = self._sess.get_inputs()[0].name
        self._outputs = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        self._nms = nms_threshold
        self._buf: np.ndarray | None = None
        self._buf_for: tuple[int, int] = (0, 0)

    def _blob(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        ph, pw = -(-h // _PAD) * _PAD, -(-w // _PAD) * _PAD
        if self._buf is None or self._buf_for != (h, w):
            self._buf = np.zeros((1, 3, ph, pw), dtype=np.float32)
            self._buf_for = (h, w)
        # Zero padding right and bottom, as the C++ does: kept per size, so only the image is copied.
        self._buf[0, :, :h, :w] = bgr.transpose(2, 0, 1)
        return self._buf

    def detect(self, bgr: np.ndarray, score_threshold: float) -> list[RawFace]:
        blob = self._blob(bgr)
        pw = blob.shape[3]
        outs = self._sess.run(self._outputs, {self._input: blob})
        n = len(STRIDES)
        boxes, scores, kps = [], [], []
        for i, stride in enumerate(STRIDES):
            cls, obj, bbox, lm = outs[i][0, :, 0], outs[n + i][0, :, 0], outs[2 * n + i][0], outs[3 * n + i][0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = np.flatnonzero(score >= score_threshold)
            if keep.size == 0:
                continue
            cols = pw // stride
            gx, gy = (keep % cols).astype(np.float32), (keep // cols).astype(np.float32)
            b = bbox[keep]
            cx, cy = (gx + b[:, 0]) * stride, (gy + b[:, 1]) * stride
            bw, bh = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1))
            scores.append(score[keep])
            pts = lm[keep].reshape(-1, 5, 2)
            kps.append((pts + np.stack([gx, gy], axis=1)[:, None, :]) * stride)
        if not boxes:
            return []
        all_boxes, all_scores, all_kps = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
        picked = cv2.dnn.NMSBoxes(all_boxes.tolist(), all_scores.tolist(), score_threshold, self._nms)
        return [
            RawFace(*_box(all_boxes[j]), score=float(all_scores[j]), landmarks=all_kps[j])
            for j in np.asarray(picked, dtype=np.int64).reshape(-1)
        ]


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in row)
    return x, y, w, h
