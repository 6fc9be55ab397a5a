"""The default face detector: YuNet under onnxruntime with the shipped model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from harness.images import astronaut_bgr, encode, pasted_face_frame
from model_store import ModelStore
from service.comms.base import MemoryPublisher
from service.config import ApiConfig, CameraConfig, DetectorConfig, DetectSize, Settings
from service.demo import DEMO_SCRIPT, background, render, shipped_face
from service.infer.analysis import ImageAnalyser
from service.infer.imaging import decode_image
from service.metrics import Metrics
from service.models import ModelManager, load_version
from service.pipeline.capture import Frame
from service.pipeline.detect import DetectorError, YuNetDetector, detect_scaled, make_detector
from service.pipeline.runner import CameraPipeline
from service.pipeline.yunet import BUNDLED_MODEL, YuNetSession


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    det = make_detector(DetectorConfig())
    assert isinstance(det, YuNetDetector)
    return det


def test_finds_the_astronauts_face_with_a_score(detector: YuNetDetector) -> None:
    boxes = detector.detect(astronaut_bgr())
    assert len(boxes) == 1
    b = boxes[0]
    # Where yuface's own C++ puts it (tests/tools/test_yunet_build.py checks the two agree).
    assert iou((b.x, b.y, b.w, b.h), (178, 63, 89, 112)) > 0.8
    assert b.score is not None and b.score > 0.9


@pytest.mark.parametrize("size", [56, 120])
def test_finds_a_pasted_face(detector: YuNetDetector, size: int) -> None:
    for x, y in ((160, 200), (420, 260)):
        frame, truth = pasted_face_frame(size, x, y)
        boxes = detector.detect(frame)
        assert len(boxes) == 1, (size, x, y, boxes)
        b = boxes[0]
        assert iou((b.x, b.y, b.w, b.h), truth) > 0.5, (b, truth)


def test_finds_nothing_on_a_blank_or_face_free_frame(detector: YuNetDetector) -> None:
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert detector.detect(np.full((480, 640, 3), 200, np.uint8)) == []
    assert detector.detect(background(640, 480)) == []


def test_odd_sizes_grey_images_and_scaling_map_back(detector: YuNetDetector) -> None:
    frame, truth = pasted_face_frame(120, 330, 250)
    # Not a multiple of 32: the input is padded, and the boxes stay inside the image.
    odd = frame[:461, :613]
    (b,) = detector.detect(odd)
    assert iou((b.x, b.y, b.w, b.h), truth) > 0.5 and b.x + b.w <= 613 and b.y + b.h <= 461
    (g,) = detector.detect(frame.mean(axis=2).astype(np.uint8))
    assert iou((g.x, g.y, g.w, g.h), truth) > 0.5
    (s,) = detect_scaled(detector, frame, 320, 240)
    assert iou((s.x, s.y, s.w, s.h), truth) > 0.5


def test_min_face_and_threshold_come_from_config() -> None:
    frame, _ = pasted_face_frame(56)
    assert make_detector(DetectorConfig(min_face=80)).detect(frame) == []
    assert make_detector(DetectorConfig(score_threshold=0.99)).detect(frame) == []
    assert len(make_detector(DetectorConfig(min_face=40)).detect(frame)) == 1


def test_landmarks_sit_on_the_face() -> None:
    frame, (x, y, w, h) = pasted_face_frame(120, 320, 240)
    (face,) = YuNetSession().detect(frame, 0.5)
    lm = face.landmarks
    assert lm.shape == (5, 2)
    assert ((lm[:, 0] > x) & (lm[:, 0] < x + w) & (lm[:, 1] > y) & (lm[:, 1] < y + h)).all()
    # Right eye (image left), left eye, nose, mouth corners: eyes above the nose above the mouth.
    assert lm[0, 0] < lm[1, 0] and max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])


def test_opencv_runs_the_shipped_file_too_and_agrees() -> None:
    frame, _ = pasted_face_frame(120, 300, 240)
    (cv,) = make_detector(DetectorConfig(kind="opencv_yunet", yunet_model=BUNDLED_MODEL)).detect(frame)
    (ort,) = make_detector(DetectorConfig()).detect(frame)
    assert abs(cv.x - ort.x) <= 1 and abs(cv.w - ort.w) <= 1 and abs(cv.score - ort.score) < 0.01


def test_a_file_that_is_not_a_model_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(DetectorError, match="cannot load YuNet model"):
        make_detector(DetectorConfig(yunet_model=bad, kind="yunet"))


def test_a_large_upload_is_decoded_reduced_and_answered_in_its_own_coordinates(store_root: Path) -> None:
    store = ModelStore(store_root)
    model = load_version(store, "ean", store.resolve("ean", "stable"), variant=None, threads=1, max_batch=4)
    frame, (tx, ty, tw, th) = pasted_face_frame(120, 300, 240)
    big = cv2.resize(frame, (2560, 1920), interpolation=cv2.INTER_CUBIC)
    data = encode(big)
    _, header, factor = decode_image(data, max_pixels=10**8, max_side=10**5, want_side=640)
    assert (header.width, factor) == (2560, 4)
    analysis = ImageAnalyser(DetectorConfig(), ApiConfig(detect_max_side=640)).analyse(data, model)
    assert (analysis.width, analysis.height) == (2560, 1920)
    (face,) = analysis.faces
    b = face.box
    assert iou((b.x, b.y, b.w, b.h), (tx * 4, ty * 4, tw * 4, th * 4)) > 0.5
    # The label is the one the full-size frame gets: the reduced decode loses nothing the crop needs.
    small = ImageAnalyser(DetectorConfig(), ApiConfig(detect_max_side=640)).analyse(encode(frame), model)
    assert small.faces[0].label == face.label


def _demo_clip_published(make_settings: Callable[..., Settings], interval: int) -> list[tuple[object, ...]]:
    """Everything the pipeline publishes on the demo script, with its frame time, in order."""
    # Every re-detection publishes (no re-entry window), so the comparison sees each track's events.
    settings = make_settings(tracking={"reentry_window_s": 0})
    metrics = Metrics(CollectorRegistry())
    models = ModelManager(settings.model, metrics)
    models.load_initial()
    publisher = MemoryPublisher()
    cam = CameraConfig.model_validate({"id": "c", "source": "unused.avi", "detect": {"interval": interval}})
    pipe = CameraPipeline(
        cam, "unused.avi", detector=settings.detector, tracking=settings.tracking,
        models=models, publisher=publisher, metrics=metrics,
    )  # fmt: skip
    bg, face, fps, t = background(640, 480), shipped_face(), 15.0, 1_000.0
    seq = 0
    for seg in DEMO_SCRIPT:
        n = max(1, round(seg.seconds * fps))
        for i in range(n):
            seq += 1
            t += 1 / fps
            pipe.process(Frame(render(bg, face, seg, i / max(1, n - 1)), t, seq))
    events = [(round(e.timestamp, 3), e.event_type, e.label, e.track_id) for e in publisher.events]
    states = [(round(s.timestamp, 3), s.label, s.faces, s.track_id) for s in publisher.expressions]
    return sorted(events + states, key=lambda x: (x[0], len(x)))  # type: ignore[arg-type]


def _same_within(a: list[tuple[object, ...]], b: list[tuple[object, ...]], seconds: float) -> bool:
    """The same publications in the same order, each at most ``seconds`` apart (times are rounded)."""
    return len(a) == len(b) and all(
        x[1:] == y[1:] and abs(float(x[0]) - float(y[0])) <= seconds + 0.002  # type: ignore[arg-type]
        for x, y in zip(a, b, strict=True)
    )


def test_detecting_every_third_frame_keeps_the_demo_clips_events(make_settings: Callable[..., Settings]) -> None:
    """The camera default detects on every 3rd frame and reuses its boxes in between: on the demo
    clip (a face drifting, leaving, coming back mirrored and in other light) that publishes the same
    events and expression states as detecting on every frame, each at most the two frames late that
    a box can be stale."""
    assert DetectSize().interval == 3
    every = _demo_clip_published(make_settings, 1)
    assert len([x for x in every if x[1] == "expression_change"]) >= 3
    assert _same_within(_demo_clip_published(make_settings, 3), every, 2 / 15)
    # What it guards against: boxes reused for a second keep a face that has left for too long.
    assert not _same_within(_demo_clip_published(make_settings, 15), every, 2 / 15)
