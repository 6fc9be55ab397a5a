"""Pure stages: image headers, the tracker, the rule engine, the outbox."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from harness.images import encode, lying_png, one_face_frame
from service.api.errors import CoreError, from_core
from service.cameras import CameraError, CameraProblem
from service.comms.outbox import Outbox
from service.comms.payloads import AnomalyEvent, ExpressionChange
from service.config import RulesConfig, TrackingConfig
from service.infer.imaging import ImageError, ImageProblem, decode_image, read_header
from service.metrics import Metrics
from service.models import PromoteError, Refusal
from service.pipeline.detect import Box
from service.pipeline.rules import RuleEngine
from service.pipeline.track import IouTracker, Track

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


# -- imaging ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "params"),
    [
        (".jpg", []),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".png", []),
        (".webp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
    ],
)
def test_headers_give_the_real_size(ext: str, params: list[int]) -> None:
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, image, params)
    assert ok
    header = read_header(buf.tobytes())
    assert (header.width, header.height) == (53, 37)
    decoded, _, _ = decode_image(buf.tobytes(), max_pixels=10**6, max_side=100)
    assert decoded.shape == (37, 53, 3)


def test_decompression_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(png_header(30000, 30000), max_pixels=40_000_000, max_side=16384)
    assert info.value.kind is ImageProblem.TOO_LARGE


def test_truncated_and_garbage_images() -> None:
    jpeg = encode(one_face_frame())
    with pytest.raises(ImageError) as info:
        decode_image(jpeg[: len(jpeg) // 2], max_pixels=10**8, max_side=10**5)
    assert info.value.kind is ImageProblem.INVALID
    with pytest.raises(ImageError) as info:
        decode_image(b"\x00garbage" * 100, max_pixels=10**8, max_side=10**5)
    assert info.value.kind is ImageProblem.UNSUPPORTED_FORMAT
    png = encode(one_face_frame(), ".png")
    with pytest.raises(ImageError) as info:
        decode_image(png[:200], max_pixels=10**8, max_side=10**5)
    assert info.value.kind is ImageProblem.INVALID


# VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forked parent (pytest) across exec.
_DECODE_PEAK = """
import re, sys
from service.infer.imaging import ImageError, decode_image
data = sys.stdin.buffer.read()
try:
    decode_image(data, max_pixels=40_000_000, max_side=16384)
    print("decoded", end=" ")
except ImageError as exc:
    print(exc.kind.value, end=" ")
with open("/proc/self/status") as f:
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1)) // 1024)
"""


def test_a_png_whose_chunk_lies_about_its_length_is_refused_before_the_decoder() -> None:
    """OpenCV allocated 1.7 GB for this 67-byte file before failing; the chunk walk refuses it first."""
    data = lying_png()
    assert len(data) == 67
    with pytest.raises(ImageError) as info:
        decode_image(data, max_pixels=40_000_000, max_side=16384)
    assert info.value.kind is ImageProblem.INVALID
    assert "claims 1778384908 bytes" in str(info.value)
    # The peak memory of a process that gets it, as the service's decode path does.
    proc = subprocess.run([sys.executable, "-c", _DECODE_PEAK], input=data, capture_output=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    kind, peak_mib = proc.stdout.decode().split()
    assert kind == ImageProblem.INVALID.value and int(peak_mib) < 300, proc.stdout


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda png: png[:-12], "no IEND chunk"),
        (lambda png: png[:45] + bytes([png[45] ^ 1]) + png[46:], "fails its CRC"),
        (lambda png: png[:37] + b"ID4T" + png[41:], "not four letters"),
    ],
)
def test_png_chunks_must_be_whole_and_intact(damage: Callable[[bytes], bytes], why: str) -> None:
    png = encode(one_face_frame(), ".png")
    assert decode_image(png, max_pixels=10**8, max_side=10**5)[0].shape[:2] == one_face_frame().shape[:2]
    with pytest.raises(ImageError, match=why) as info:
        decode_image(damage(png), max_pixels=10**8, max_side=10**5)
    assert info.value.kind is ImageProblem.INVALID


def test_a_webp_whose_sizes_lie_is_refused_before_the_decoder() -> None:
    webp = encode(one_face_frame(), ".webp")
    assert decode_image(webp, max_pixels=10**8, max_side=10**5)[0].shape[:2] == one_face_frame().shape[:2]
    huge = struct.pack("<I", 0x6A00000C)
    for lie in (webp[:4] + huge + webp[8:], webp[:16] + huge + webp[20:]):
        with pytest.raises(ImageError, match=r"claims .* than the data holds") as info:
            decode_image(lie, max_pixels=10**8, max_side=10**5)
        assert info.value.kind is ImageProblem.INVALID


# -- the HTTP answers to the core's errors ----------------------------------------------------------

# What each kind has answered since before the core had kinds (the HTTP tests pin some end to end).
CORE_ANSWERS: list[tuple[CoreError, int, str]] = [
    (ImageError(ImageProblem.UNSUPPORTED_FORMAT, "m"), 415, "unsupported_image_format"),
    (ImageError(ImageProblem.INVALID, "m"), 422, "invalid_image"),
    (ImageError(ImageProblem.TOO_LARGE, "m"), 413, "image_too_large"),
    (CameraError(CameraProblem.UNKNOWN, "m"), 404, "unknown_camera"),
    (CameraError(CameraProblem.DISABLED, "m"), 409, "camera_disabled"),
    (CameraError(CameraProblem.NOT_RUNNING, "m"), 503, "unavailable"),
    (PromoteError("promote", Refusal.UNKNOWN_VERSION, "m"), 422, "unknown_version"),
    (PromoteError("promote", Refusal.UNVERIFIED, "m"), 422, "verify_failed"),
    (PromoteError("promote", Refusal.UNSERVABLE, "m"), 422, "promote_failed"),
    (PromoteError("promote", Refusal.STORE_REFUSED, "m"), 422, "promote_failed"),
    (PromoteError("rollback", Refusal.NO_TARGET, "m"), 422, "rollback_failed"),
    (PromoteError("rollback", Refusal.UNSERVABLE, "m"), 422, "rollback_failed"),
    (PromoteError("rollback", Refusal.STORE_REFUSED, "m"), 422, "rollback_failed"),
]


@pytest.mark.parametrize(("error", "status", "code"), CORE_ANSWERS)
def test_each_kind_of_core_error_keeps_its_http_answer(error: CoreError, status: int, code: str) -> None:
    answer = from_core(error)
    assert (answer.status, answer.code, answer.message) == (status, code, "m")


def test_every_kind_of_core_error_has_an_answer() -> None:
    # A kind added without an entry in service/api/errors.py would answer a 500.
    covered = {error.kind for error, _, _ in CORE_ANSWERS}
    assert covered == {*ImageProblem, *CameraProblem, *Refusal}


# -- tracker ----------------------------------------------------------------------------------------


def probs(label: str, p: float = 0.9) -> np.ndarray:
    row = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1), np.float32)
    row[LABELS.index(label)] = p
    return row


def test_tracker_keeps_ids_and_ends_stale_tracks() -> None:
    tr = IouTracker(iou_threshold=0.3, max_age_s=0.5, tau_s=0.0)
    a, b = Box(10, 10, 50, 50), Box(200, 200, 60, 60)
    seen, ended = tr.update([a, b], np.stack([probs("happy"), probs("sad")]), 0.0)
    ids = {t.box: t.id for t in seen}
    seen, ended = tr.update([Box(14, 12, 50, 50), Box(205, 198, 60, 60)], np.stack([probs("happy")] * 2), 0.1)
    assert {t.id for t in seen} == set(ids.values()) and not ended
    seen, ended = tr.update([Box(12, 12, 50, 50)], probs("happy")[None], 0.7)
    assert [t.id for t in seen] == [ids[a]] and [t.id for t in ended] == [ids[b]]
    seen, _ = tr.update([Box(400, 10, 40, 40)], probs("fear")[None], 0.8)
    assert seen[0].id not in ids.values()


def test_smoothing_is_time_based() -> None:
    tr = IouTracker(tau_s=1.0)
    box = Box(0, 0, 50, 50)
    tr.update([box], probs("happy", 1.0)[None], 0.0)
    seen, _ = tr.update([box], probs("sad", 1.0)[None], 1.0)
    # After one time constant the new label has 1 - 1/e of the weight.
    assert seen[0].probs[LABELS.index("sad")] == pytest.approx(1 - np.exp(-1), rel=1e-3)


# -- rules ------------------------------------------------------------------------------------------


def engine(**rules: dict) -> RuleEngine:
    cfg = RulesConfig.model_validate(rules)
    eng = RuleEngine("cam1", cfg, TrackingConfig(min_dwell_s=0.3), LABELS)
    eng.model_version = 7
    return eng


def track(p: np.ndarray, tid: int = 1) -> Track:
    return Track(tid, Box(0, 0, 50, 50), 0.0, p)


def run(eng: RuleEngine, script: list[tuple[float, str, float]]) -> list:
    """(time, label, prob) per frame for one track -> every event."""
    out = []
    for now, label, p in script:
        out += eng.on_frame([track(probs(label, p))], [], now)
    return out


def test_expression_change_needs_the_dwell_time() -> None:
    eng = engine()
    frames = [(t / 10, "happy", 0.8) for t in range(5)] + [(0.5, "sad", 0.8), (0.6, "happy", 0.8)]
    frames += [(0.7 + t / 10, "sad", 0.8) for t in range(5)]
    events = [e for e in run(eng, frames) if isinstance(e, ExpressionChange)]
    assert [(e.label, e.previous_label) for e in events] == [("happy", None), ("sad", "happy")]
    assert events[0].model_version == 7 and events[0].track_id == 1


def test_sustained_negative_new_update_end() -> None:
    eng = engine(sustained_negative={"threshold": 0.6, "min_duration_s": 1.0, "clear_s": 0.5, "update_delta": 0.1})
    script = [(t / 10, "neutral", 0.9) for t in range(3)]
    script += [(0.3 + t / 10, "sad", 0.65) for t in range(12)]  # above threshold from 0.3 s
    script += [(1.5 + t / 10, "angry", 0.9) for t in range(3)]  # rises: update
    script += [(1.8 + t / 10, "happy", 0.9) for t in range(8)]  # below: end after clear_s
    anomalies = [e for e in run(eng, script) if isinstance(e, AnomalyEvent)]
    assert [(e.type, e.event_type) for e in anomalies] == [
        ("new", "sustained_negative_affect"),
        ("update", "sustained_negative_affect"),
        ("end", "sustained_negative_affect"),
    ]
    new, update, end = anomalies
    assert new.id == update.id == end.id and new.id.startswith(f"{new.start_time:.6f}-")
    assert new.start_time == pytest.approx(0.3) and new.label == "sad"
    assert update.label == "angry" and update.top_score > new.top_score
    assert end.end_time == pytest.approx(2.3, abs=0.11) and new.end_time is None


def test_sustained_anomaly_ends_with_its_track() -> None:
    eng = engine(sustained_negative={"min_duration_s": 0.2})
    events = run(eng, [(t / 10, "fear", 0.9) for t in range(5)])
    t = track(probs("fear"))
    events += eng.on_frame([], [t], 1.0)
    kinds = [(e.type, e.end_time) for e in events if isinstance(e, AnomalyEvent)]
    assert kinds == [("new", None), ("end", 1.0)]


def test_abrupt_change_from_neutral_to_fear() -> None:
    eng = engine(
        sustained_negative={"enabled": False},
        abrupt_change={"window_s": 1.0, "min_score": 0.5, "hold_s": 0.5},
    )
    script = [(t / 10, "neutral", 0.9) for t in range(5)] + [(0.5 + t / 10, "fear", 0.8) for t in range(5)]
    script += [(1.0 + t / 10, "neutral", 0.9) for t in range(8)]
    anomalies = [e for e in run(eng, script) if isinstance(e, AnomalyEvent)]
    assert [(e.type, e.label, e.previous_label) for e in anomalies] == [
        ("new", "fear", "neutral"),
        ("end", "fear", "neutral"),
    ]
    # A slow drift (outside the window) is not abrupt.
    eng2 = engine(sustained_negative={"enabled": False}, abrupt_change={"window_s": 0.5})
    slow = [(0.0, "neutral", 0.9)] + [(0.1 + t / 10, "sad", 0.9) for t in range(10)] + [(1.2, "fear", 0.9)]
    assert not [e for e in run(eng2, slow) if isinstance(e, AnomalyEvent)]


def test_camera_fault_lifecycle_and_close() -> None:
    eng = engine()
    new = eng.camera_status(False, "stream_lost", 10.0)
    assert [(e.type, e.event_type, e.label) for e in new] == [("new", "camera_fault", "stream_lost")]
    assert eng.camera_status(False, "open_failed", 11.0) == []
    end = eng.camera_status(True, None, 12.0)
    assert [(e.type, e.id, e.end_time) for e in end] == [("end", new[0].id, 12.0)]
    eng.camera_status(False, "no_frames", 13.0)
    run(eng, [(13 + t / 10, "sad", 0.9) for t in range(40)])
    closing = eng.close(20.0)
    assert sorted(e.event_type for e in closing) == ["camera_fault", "sustained_negative_affect"]
    assert all(e.type == "end" and e.end_time == 20.0 for e in closing)


def test_rule_labels_are_resolved_by_name() -> None:
    eng = engine(sustained_negative={"labels": ["sad", "contempt"], "min_duration_s": 0})
    assert eng.unknown_labels() == ["contempt"]
    reordered = list(reversed(LABELS))
    eng.set_labels(reordered)
    row = np.zeros(len(reordered), np.float32)
    row[reordered.index("sad")] = 1.0
    events = eng.on_frame([track(row)], [], 0.0)
    assert any(isinstance(e, AnomalyEvent) and e.label == "sad" for e in events)


# -- outbox -----------------------------------------------------------------------------------------


def test_outbox_keeps_order_drops_oldest_and_survives_reopen(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry(), ["c"])
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, max_messages=5, metrics=metrics)
    for i in range(8):
        box.put("fer/c/events", "c", f'{{"n": {i}}}'.encode())
    assert len(box) == 5 and box.dropped == 3
    assert metrics.registry.get_sample_value("fer_events_dropped_total") == 3
    assert metrics.registry.get_sample_value("fer_events_queued") == 5
    rows = box.peek(2)
    box.delete([r.id for r in rows])
    box.close()
    again = Outbox(path, max_messages=5)
    assert [r.payload for r in again.peek(10)] == [f'{{"n": {i}}}'.encode() for i in (5, 6, 7)]
    again.close()
