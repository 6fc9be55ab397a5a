"""Pipeline pieces with real components: the demo clip, the detector, the frame mailbox, camera
fault detection in the runner, model variants, and the entry point."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from harness.images import one_face_frame
from model_store import ModelStore
from service.__main__ import main
from service.comms.base import MemoryPublisher
from service.comms.payloads import AnomalyEvent
from service.config import CameraConfig, DetectorConfig, Settings
from service.demo import DEMO_SCRIPT, ensure_demo_clip
from service.metrics import Metrics
from service.models import ModelLoadError, ModelManager, load_version
from service.pipeline.capture import Frame, LatestFrame
from service.pipeline.classify import crop_face, prepare_batch
from service.pipeline.detect import Box, DetectorError, detect_scaled, make_detector
from service.pipeline.runner import CameraPipeline


def test_demo_clip_shows_the_shipped_face(tmp_path: Path) -> None:
    path = ensure_demo_clip(tmp_path)
    assert ensure_demo_clip(tmp_path) == path  # generated once
    cap = cv2.VideoCapture(str(path))
    detector = make_detector(DetectorConfig())
    found = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        found.append(len(detect_scaled(detector, frame, 320, 240)))
    cap.release()
    # OpenCV's AVI reader may leave out the very last frame.
    assert abs(len(found) - round(sum(s.seconds for s in DEMO_SCRIPT) * 15)) <= 1
    face_frames = [n for n, s in zip(found, _frame_segments(), strict=False) if s.face]
    empty_frames = [n for n, s in zip(found, _frame_segments(), strict=False) if not s.face]
    assert sum(n == 1 for n in face_frames) / len(face_frames) > 0.8
    assert sum(empty_frames) == 0


def _frame_segments() -> list:
    return [s for s in DEMO_SCRIPT for _ in range(round(s.seconds * 15))]


def test_crop_keeps_the_face_centred_at_the_edge() -> None:
    image = np.zeros((100, 100), np.uint8)
    image[0:20, 0:20] = 255
    crop = crop_face(image, Box(0, 0, 20, 20), margin=0.5, size=(40, 40))
    # The face stays in the middle of the crop; outside the frame is replicated border.
    assert crop.shape == (40, 40) and crop[20, 20] == 255


def test_haar_still_finds_the_real_face_and_a_yunet_file_must_exist(tmp_path: Path) -> None:
    boxes = detect_scaled(make_detector(DetectorConfig(kind="haar")), one_face_frame(), 320, 240)
    assert len(boxes) == 1 and boxes[0].score is None
    for kind in ("yunet", "opencv_yunet"):
        with pytest.raises(DetectorError, match="YuNet model"):
            make_detector(DetectorConfig(kind=kind, yunet_model=tmp_path / "missing.onnx"))
    # A config that names only a YuNet file keeps meaning cv2.FaceDetectorYN, as it did before.
    assert DetectorConfig(yunet_model=tmp_path / "y.onnx").resolved_kind == "opencv_yunet"
    assert DetectorConfig().resolved_kind == "yunet"


def test_mailbox_counts_drops_only_while_the_analyser_is_busy() -> None:
    box = LatestFrame()
    img = np.zeros((2, 2), np.uint8)
    assert box.put(Frame(img, 0.0, 1)) is None
    assert box.put(Frame(img, 0.1, 2)) == "skipped"
    box.set_busy(True)
    assert box.put(Frame(img, 0.2, 3)) == "dropped"
    got = box.take(0.01)
    assert got is not None and got.seq == 3 and box.take(0.01) is None
    assert (box.dropped, box.skipped) == (1, 1)
    # A burst: the analyser is busy, but the frame it would lose came before it was due anyway.
    box.pace(time.monotonic() + 1.0)
    box.put(Frame(img, 0.3, 4))
    assert box.put(Frame(img, 0.31, 5)) == "skipped"
    assert (box.dropped, box.skipped) == (1, 2)


def test_model_variants_come_from_the_manifest(store_root: Path) -> None:
    store = ModelStore(store_root)
    version = store.resolve("ean", "stable")
    manifest = store.manifest("ean", version)
    with pytest.raises(ModelLoadError, match="no variant 'nope'"):
        load_version(store, "ean", version, variant="nope", threads=1, max_batch=4)
    if not manifest.variants:
        pytest.skip("the stable model has no variants")
    name = next(iter(manifest.variants))
    model = load_version(store, "ean", version, variant=name, threads=1, max_batch=4)
    assert model.model_file == manifest.variants[name].file
    faces = prepare_batch(one_face_frame(), [Box(210, 130, 220, 220)], model)
    assert faces.shape == (1, model.channels, model.input_size[1], model.input_size[0])
    assert model.predict(faces).sum() == pytest.approx(1.0, abs=1e-4)


def test_runner_reports_a_camera_that_stops_sending(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    metrics = Metrics(CollectorRegistry())
    models = ModelManager(settings.model, metrics)
    models.load_initial()
    publisher = MemoryPublisher()
    cam = CameraConfig.model_validate(
        {"id": "c", "source": "unused.avi", "rules": {"camera_fault": {"no_frames_s": 1}}}
    )
    pipe = CameraPipeline(
        cam, "unused.avi", detector=settings.detector, tracking=settings.tracking,
        models=models, publisher=publisher, metrics=metrics,
    )  # fmt: skip
    now = time.time()
    pipe.capture_status.set(True, None)
    pipe.capture_status.last_frame_at = now
    pipe._check_status(now)
    pipe.process(Frame(one_face_frame(), now, 1))
    pipe._check_status(now + 2.0)  # no frame for 2 s
    pipe.capture_status.last_frame_at = now + 2.5
    pipe._check_status(now + 2.5)
    faults = [e for e in publisher.events if isinstance(e, AnomalyEvent)]
    assert [(e.type, e.label) for e in faults] == [("new", "no_frames"), ("end", "no_frames")]
    assert [(s.state, s.reason) for s in publisher.statuses] == [("online", None), ("offline", "no_frames"),
                                                                 ("online", None)]  # fmt: skip
    assert metrics.registry.get_sample_value("fer_faces_total", {"camera": "c"}) == 1
    assert metrics.registry.get_sample_value("fer_camera_up", {"camera": "c"}) == 1


def test_entry_point_check_prints_the_config_without_secrets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("api: {token: hunter2}\ncameras: [{id: a, source: 0}]\n")
    assert main(["check", "--config", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cameras"][0]["id"] == "a" and "hunter2" not in json.dumps(out)
    assert main(["serve", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_start_fails_clearly_without_a_servable_model(
    tmp_path: Path, store_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FER_MQTT__ENABLED", "false")
    monkeypatch.setenv("FER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FER_MODEL__STORE", str(store_root))
    monkeypatch.setenv("FER_MODEL__ALIAS", "nope")
    assert main(["serve"]) == 2
    assert "cannot start: model 'ean' has no alias 'nope'" in caplog.text
