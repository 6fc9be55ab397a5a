"""POST /infer's detectors are built at start-up: no request, not even the first of each worker
thread, pays for an onnxruntime session."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from harness.images import encode, one_face_frame
from model_store import ModelStore
from service.config import ApiConfig, DetectorConfig
from service.infer import analysis
from service.infer.analysis import ImageAnalyser
from service.models import load_version
from service.pipeline.detect import DetectorError
from service.pipeline.yunet import YuNetSession


def test_the_first_requests_build_no_detector(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore(store_root)
    model = load_version(store, "ean", store.resolve("ean", "stable"), variant=None, threads=1, max_batch=4)
    sessions = []
    real_init = YuNetSession.__init__

    def counted(self: YuNetSession, *args: object, **kwargs: object) -> None:
        sessions.append(threading.current_thread().name)
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(YuNetSession, "__init__", counted)
    analyser = ImageAnalyser(DetectorConfig(), ApiConfig(max_concurrency=4))
    assert len(sessions) == 4, "one session per image analysed at once, built at start-up"
    sessions.clear()

    # As many worker threads as the limit lets in, each with its first request, all at once.
    data = encode(one_face_frame())
    start = threading.Barrier(4)
    results: list[int] = []

    def request() -> None:
        start.wait()
        results.append(len(analyser.analyse(data, model).faces))

    workers = [threading.Thread(target=request, name=f"worker-{i}") for i in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert results == [1, 1, 1, 1]
    assert sessions == [], f"requests built sessions on {sessions}"


def test_a_detector_that_cannot_load_still_fails_where_it_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Built lazily then: the cameras' start-up (or the request) reports it, in one line.
    bad = DetectorConfig(kind="yunet", yunet_model=tmp_path / "missing.onnx")
    analyser = ImageAnalyser(bad, ApiConfig())
    monkeypatch.setattr(analysis, "decode_planned", lambda data, plan: one_face_frame())
    with pytest.raises(DetectorError, match="does not exist"):
        analyser.analyse(encode(one_face_frame()), None)  # type: ignore[arg-type]
