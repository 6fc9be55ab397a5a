"""The whole service as users run it (`python -m service --config`), fed by a clip of a real face,
publishing to a real mosquitto, stopped with SIGTERM."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from harness.broker import Mosquitto, Subscriber
from harness.faults import GatedProxy
from harness.images import face_crop
from harness.machine import free_port, wait_until
from harness.service import ServiceProcess
from model_store import ModelStore
from service.demo import Segment, write_clip
from tests.service.conftest import needs_broker

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_KEYS = {"image", "images", "pixels", "crop", "crops", "embedding", "embeddings", "frame", "face_image"}


def clip(path: Path) -> Path:
    # Empty, a face for 3 s, empty: one track, then the file ends (a lost stream) and reopens.
    script = [Segment(0.5, face=False), Segment(3.0, x=0.5, size=220), Segment(1.5, face=False)]
    return write_clip(path, face_crop(), script, fps=10)


def service_config(tmp_path: Path, store_root: Path, mqtt_port: int, cameras: list[dict]) -> dict[str, Any]:
    labels = ModelStore(store_root).manifest("ean", ModelStore(store_root).resolve("ean", "stable")).labels
    return {
        "state_dir": str(tmp_path / "state"),
        "api": {"token": "t"},
        "mqtt": {"port": mqtt_port, "reconnect_min_s": 1, "reconnect_max_s": 1, "client_id": "fer-e2e"},
        "model": {"store": str(store_root), "watch_interval_s": 0.5},
        "tracking": {"max_age_s": 0.5, "min_dwell_s": 0.3, "smoothing_tau_s": 0.2},
        # Every label counts as "negative", so the scripted face fires the rule whatever the model
        # says about it: this checks the lifecycle end to end, the rule's maths is unit-tested.
        "rules": {
            "sustained_negative": {"labels": labels, "threshold": 0.5, "min_duration_s": 0.5, "clear_s": 0.3},
            "abrupt_change": {"enabled": False},
        },
        "cameras": cameras,
    }


def assert_only_json(messages: list) -> None:
    """Every byte published parses as JSON and holds labels, scores and times, never pixels."""

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            assert not FORBIDDEN_KEYS & {k.lower() for k in value}, value.keys()
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            assert len(value) <= 32, "a long array in a payload"
            for v in value:
                walk(v)
        elif isinstance(value, str):
            assert len(value) <= 256, "a long string in a payload"

    assert messages
    for m in messages:
        doc = json.loads(m.payload.decode("utf-8"))
        assert isinstance(doc, dict)
        assert len(m.payload) < 8192
        walk(doc)


def test_stream_end_to_end(
    tmp_path: Path, store_root: Path, broker: Mosquitto, services: list[ServiceProcess]
) -> None:
    sub = Subscriber(broker.port)
    sub.connected.wait(5)
    cams = [{"id": "cam1", "source": str(clip(tmp_path / "clip.avi")), "fps": 10, "reconnect_min_s": 0.5}]
    svc = ServiceProcess.configured(tmp_path, service_config(tmp_path, store_root, broker.port, cams))
    services.append(svc.start())
    labels = svc.get("/models")["served"]["labels"]

    def anomalies(kind: str) -> list[dict]:
        return [
            m.json() for m in sub.snapshot("fer/cam1/events")
            if m.json().get("event_type") == kind
        ]  # fmt: skip

    sub.wait_for(lambda ms: [e for e in anomalies("sustained_negative_affect") if e["type"] == "end"], timeout=30,
                 what="sustained anomaly end")  # fmt: skip
    sub.wait_for(lambda ms: [e for e in anomalies("camera_fault") if e["type"] == "end"], timeout=30,
                 what="camera fault end (clip ended, reopened)")  # fmt: skip
    cameras = svc.get("/cameras")["cameras"]
    assert cameras[0]["id"] == "cam1" and cameras[0]["frames_processed"] > 10
    metrics = httpx.get(f"{svc.url}/metrics").text
    assert 'fer_stage_seconds_count{camera="cam1",stage="detect"}' in metrics
    assert "fer_mqtt_connected 1.0" in metrics
    assert svc.stop() == 0
    sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/available" and b"stopped" in m.payload], what="stopped")
    sub.close()

    everything = sub.snapshot()
    assert_only_json(everything)
    topics = {m.topic for m in everything}
    assert topics <= {
        "fer/available", "fer/cam1/events", "fer/cam1/expression", "fer/cam1/status",
        "fer/cam1/analysis/state", "homeassistant/device/fer_edge/config",
    }, topics  # fmt: skip

    available = [m.json()["state"] for m in sub.snapshot("fer/available")]
    assert available[0] == "online" and available[-1] == "stopped"
    statuses = [(m.json()["state"], m.json()["reason"]) for m in sub.snapshot("fer/cam1/status")]
    assert statuses[0] == ("online", None) and ("offline", "stream_lost") in statuses
    assert statuses[-1] == ("offline", "stopped")

    # Labels are published: the retained expression and the expression-change events.
    expressions = [m.json() for m in sub.snapshot("fer/cam1/expression")]
    assert any(e["label"] in labels for e in expressions) and expressions[-1]["camera"] == "cam1"
    changes = [e for e in (m.json() for m in sub.snapshot("fer/cam1/events")) if e["kind"] == "expression"]
    assert changes and all(c["label"] in labels and c["model_version"] is not None for c in changes)

    # The scripted face fired new -> end with one id and consistent times.
    sustained = anomalies("sustained_negative_affect")
    first_id = sustained[0]["id"]
    lifecycle = [e for e in sustained if e["id"] == first_id]
    assert lifecycle[0]["type"] == "new" and lifecycle[-1]["type"] == "end"
    assert [e["type"] for e in lifecycle[1:-1]] == ["update"] * (len(lifecycle) - 2)
    assert lifecycle[0]["end_time"] is None and lifecycle[-1]["end_time"] >= lifecycle[0]["start_time"]
    assert lifecycle[0]["track_id"] is not None and lifecycle[0]["label"] in labels
    fault = [e for e in anomalies("camera_fault")]
    assert fault[0]["type"] == "new" and fault[0]["label"] == "stream_lost"
    assert any(e["type"] == "end" and e["id"] == fault[0]["id"] for e in fault)


@needs_broker
def test_service_restarted_while_broker_down_then_outbox_delivers(
    tmp_path: Path, store_root: Path, services: list[ServiceProcess]
) -> None:
    broker = Mosquitto(tmp_path / "broker", port=free_port())
    cams = [{"id": "cam1", "source": str(tmp_path / "missing.avi"), "reconnect_min_s": 0.2, "reconnect_max_s": 0.5}]
    outbox = tmp_path / "state" / "outbox.sqlite3"
    first = ServiceProcess.configured(tmp_path, service_config(tmp_path, store_root, broker.port, cams), "run1.log")
    services.append(first.start())
    wait_until(lambda: first.get("/cameras")["cameras"][0]["status"] == "offline", 20, what="camera offline")
    assert first.get("/readyz")["mqtt"] == "disconnected"
    assert first.stop() == 0

    with sqlite3.connect(outbox) as db:
        queued = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY id")]
    # The camera fault opened in run 1 and was ended at its shutdown: both wait on disk.
    assert [(e["event_type"], e["type"]) for e in queued] == [("camera_fault", "new"), ("camera_fault", "end")]

    broker.start()
    try:
        sub = Subscriber(broker.port)
        sub.connected.wait(5)
        second = ServiceProcess(first.config, first.port, tmp_path / "run2.log")
        services.append(second.start())
        got = sub.wait_for(lambda ms: len([m for m in ms if m.topic == "fer/cam1/events"]) >= 2 and ms,
                           timeout=20, what="run 1 events")  # fmt: skip
        events = [m.json() for m in got if m.topic == "fer/cam1/events"]
        assert events[:2] == queued
        wait_until(lambda: second.get("/readyz")["mqtt"] == "connected", 10, what="connected")
        assert second.stop() == 0
        with sqlite3.connect(outbox) as db:
            left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        assert left == 0
        assert_only_json(sub.snapshot())
        sub.close()
    finally:
        broker.kill()


@needs_broker
def test_make_run_config_starts_without_a_broker_and_plays_the_demo(
    tmp_path: Path, store_root: Path, services: list[ServiceProcess]
) -> None:
    """deploy/config.yaml as `make run` uses it: no broker at start, the generated demo clip plays,
    and what it produced meanwhile reaches the broker once there is one."""
    broker = Mosquitto(tmp_path / "broker", port=free_port())
    proxy = GatedProxy(broker.port)
    proxy.open.clear()
    port = free_port()
    env = {
        "FER_STATE_DIR": str(tmp_path / "state"),
        "FER_API__PORT": str(port),
        "FER_MQTT__PORT": str(proxy.port),
        "FER_MQTT__RECONNECT_MAX_S": "1",
        "FER_MODEL__STORE": str(store_root),
    }
    svc = ServiceProcess(ROOT / "deploy" / "config.yaml", port, tmp_path / "service.log", env)
    services.append(svc.start())
    try:
        assert svc.get("/readyz")["mqtt"] == "disconnected"
        wait_until(lambda: svc.get("/cameras")["cameras"][0]["status"] == "online", 20, what="demo camera online")
        assert (tmp_path / "state" / "demo-v1.avi").is_file()
        # The first face of the demo appears after 1 s and its label holds 1 s: an event is queued.
        wait_until(lambda: svc.get("/cameras")["cameras"][0]["expression"] is not None, 20, what="a label")
        broker.start()
        sub = Subscriber(broker.port)
        wait_until(sub.connected.is_set, 10, what="subscriber")
        proxy.open.set()
        sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/demo/events"], timeout=20, what="demo events")
        status = sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/demo/status"], what="status")
        assert status[-1].json()["state"] == "online"
        assert svc.stop() == 0
        sub.close()
        assert_only_json(sub.snapshot())
    finally:
        proxy.close()
        broker.kill()
