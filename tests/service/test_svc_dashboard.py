"""The privacy switch (MQTT, HTTP, across a restart), the dashboard's SSE relay against a real
mosquitto (other gateways, a broker restart), the timeline's history, the accuracy it names, its
latency figures, and re-entry noise."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry, Histogram

from harness.broker import Mosquitto, Subscriber
from harness.images import face_crop
from harness.machine import wait_until
from harness.service import live_server
from model_store import ModelStore
from service.api.models import accuracy
from service.app import create_app
from service.comms.discovery import device_config
from service.comms.topics import Topics
from service.config import RulesConfig, Settings, TrackingConfig
from service.dashboard.history import MAX_CAMERAS, MAX_POINTS, History
from service.dashboard.latency import LatencyWindow, quantile, read_buckets
from service.dashboard.routes import STATIC
from service.demo import Segment, write_clip
from service.metrics import Metrics
from service.models.loaded import load_version
from service.pipeline.detect import Box
from service.pipeline.rules import RuleEngine
from service.pipeline.track import Track
from service.runtime import Runtime

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
TOKEN = {"Authorization": "Bearer test-token"}


def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def face_clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "face.mp4", face_crop(), [Segment(4.0, x=0.5, size=220)], fps=10)


@pytest.fixture
def camera_settings(make_settings: Callable[..., Settings], face_clip: Path, broker: Mosquitto) -> Settings:
    return make_settings(
        mqtt={"enabled": True, "port": broker.port, "client_id": "fer-dash-test"},
        cameras=[
            {"id": "cam1", "source": str(face_clip), "loop": True, "fps": 10},
            {"id": "spare", "source": str(face_clip), "enabled": False},
        ],
    )


def capture_alive(camera: str) -> bool:
    return any(t.name == f"capture-{camera}" and t.is_alive() for t in threading.enumerate())


def retained_state(sub: Subscriber, camera: str) -> str | None:
    msgs = sub.snapshot(f"fer/{camera}/analysis/state")
    return msgs[-1].json()["state"] if msgs else None


# -- the switch -----------------------------------------------------------------------------------


def test_mqtt_switch_stops_analysis_releases_the_stream_and_survives_a_restart(
    camera_settings: Settings, broker: Mosquitto
) -> None:
    sub = Subscriber(broker.port, ("fer/#",))
    sub.connected.wait(5)
    runtime = Runtime(camera_settings)
    runtime.start()
    try:
        pipeline = runtime.cameras.pipelines[0]
        wait_until(lambda: pipeline.frames > 5, 30, what="frames analysed")
        sub.wait_for(lambda ms: retained_state(sub, "cam1") == "ON", what="analysis ON at start")
        assert capture_alive("cam1")

        publish(broker.port, "fer/cam1/analysis/set", b"OFF")
        sub.wait_for(lambda ms: retained_state(sub, "cam1") == "OFF", what="analysis OFF")
        wait_until(lambda: not capture_alive("cam1"), 10, what="the stream released")
        assert not pipeline.analysing
        frames = pipeline.frames
        time.sleep(1.0)
        assert pipeline.frames == frames, "a switched-off camera is still analysed"
        status = sub.snapshot("fer/cam1/status")[-1].json()
        assert (status["state"], status["reason"]) == ("offline", "analysis_off")
        expression = sub.snapshot("fer/cam1/expression")[-1].json()
        assert expression["label"] is None and expression["faces"] == 0
        snap = pipeline.snapshot()
        assert snap["analysis"] == "OFF" and snap["status"] == "offline" and snap["reason"] == "analysis_off"
        # Switching off is not a camera fault.
        assert not [m for m in sub.snapshot("fer/cam1/events") if m.json().get("event_type") == "camera_fault"]

        # Garbage and other gateways' cameras change nothing.
        publish(broker.port, "fer/cam1/analysis/set", b"MAYBE")
        publish(broker.port, "fer/elsewhere/analysis/set", b"ON")
        time.sleep(0.5)
        assert not pipeline.analysing
    finally:
        runtime.stop()

    assert json.loads((Path(camera_settings.state_dir) / "analysis.json").read_text())["cameras"] == {"cam1": "OFF"}
    # A restart keeps the camera off: the file is the source of truth.
    sub.messages.clear()
    runtime = Runtime(camera_settings)
    runtime.start()
    try:
        pipeline = runtime.cameras.pipelines[0]
        sub.wait_for(lambda ms: retained_state(sub, "cam1") == "OFF", what="analysis OFF after the restart")
        time.sleep(1.0)
        assert not pipeline.analysing and pipeline.frames == 0 and not capture_alive("cam1")

        publish(broker.port, "fer/cam1/analysis/set", b"on")
        sub.wait_for(lambda ms: retained_state(sub, "cam1") == "ON", what="analysis ON again")
        wait_until(lambda: pipeline.frames > 5, 30, what="frames analysed after ON")
        sub.wait_for(
            lambda ms: [m for m in sub.snapshot("fer/cam1/status") if m.json()["state"] == "online"],
            what="camera online again",
        )
    finally:
        runtime.stop()
        sub.close()


def test_a_command_waiting_on_the_broker_at_start_is_applied(camera_settings: Settings, broker: Mosquitto) -> None:
    # A retained command (what `mosquitto_pub -r` leaves) arrives with the first connection, while
    # the pipelines are still being built: it must wait for its camera, not be dropped.
    publish(broker.port, "fer/cam1/analysis/set", b"OFF", retain=True)
    sub = Subscriber(broker.port, ("fer/cam1/analysis/state",))
    sub.connected.wait(5)
    runtime = Runtime(camera_settings)
    runtime.start()
    try:
        sub.wait_for(lambda ms: retained_state(sub, "cam1") == "OFF", what="the waiting OFF applied")
        wait_until(lambda: not runtime.cameras.pipelines[0].analysing, 10, what="analysis stopped")
    finally:
        runtime.stop()
        sub.close()


def test_http_switch_is_behind_the_admin_token(camera_settings: Settings, broker: Mosquitto) -> None:
    sub = Subscriber(broker.port, ("fer/+/analysis/state",))
    sub.connected.wait(5)
    with live_server(create_app(camera_settings)) as base:
        url = f"{base}/cameras/cam1/analysis"
        assert httpx.put(url, json={"state": "OFF"}).status_code == 401
        assert httpx.put(url, json={"state": "OFF"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        for path, body, status, code in [
            ("/cameras/nope/analysis", {"state": "OFF"}, 404, "unknown_camera"),
            ("/cameras/spare/analysis", {"state": "OFF"}, 409, "camera_disabled"),
            ("/cameras/cam1/analysis", {"state": "off please"}, 422, "validation_error"),
            ("/cameras/cam1/analysis", {"state": "OFF", "extra": 1}, 422, "validation_error"),
        ]:
            r = httpx.put(f"{base}{path}", json=body, headers=TOKEN)
            assert r.status_code == status and r.json()["error"]["code"] == code, r.text
        r = httpx.put(url, content=b"{", headers={**TOKEN, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"

        r = httpx.put(url, json={"state": "OFF"}, headers=TOKEN)
        assert r.status_code == 200 and r.json()["state"] == "OFF" and r.json()["camera"] == "cam1"
        cams = {c["id"]: c for c in httpx.get(f"{base}/cameras").json()["cameras"]}
        assert cams["cam1"]["analysis"] == "OFF" and cams["cam1"]["reason"] == "analysis_off"
        sub.wait_for(lambda ms: retained_state(sub, "cam1") == "OFF", what="OFF on the broker")
        r = httpx.put(url, json={"state": "ON"}, headers=TOKEN)
        assert r.status_code == 200 and r.json()["state"] == "ON"
        sub.wait_for(lambda ms: retained_state(sub, "cam1") == "ON", what="ON on the broker")
    sub.close()


def test_discovery_offers_a_switch_per_camera() -> None:
    config = device_config(Topics(), "fer_edge", [("demo", "Demo clip")], LABELS, "0.1.0")
    switch = config["cmps"]["demo_analysis"]
    assert switch["p"] == "switch"
    assert switch["command_topic"] == "fer/demo/analysis/set"
    assert switch["state_topic"] == "fer/demo/analysis/state"
    assert (switch["payload_on"], switch["payload_off"]) == ("ON", "OFF")
    assert switch["unique_id"] == "fer_edge_demo_analysis"


def test_topics_parse_what_they_build() -> None:
    topics = Topics()
    for build, what in ((topics.events, "events"), (topics.expression, "expression"), (topics.status, "status"),
                        (topics.analysis_state, "analysis/state"), (topics.analysis_set, "analysis/set")):  # fmt: skip
        assert topics.camera_topic(build("demo")) == ("demo", what)
    assert topics.camera_topic("fer/demo/analysis/set") == ("demo", "analysis/set")
    for topic in ("fer/a/b/analysis/set", "other/demo/analysis/set", "fer//analysis/set", "fer/available",
                  "fer/gateways/gw1/cameras", "fer/gateways/gw1/available", "fer/models/ean/stable",
                  "fer/demo/analysis", "homeassistant/status"):  # fmt: skip
        assert topics.camera_topic(topic) is None, topic
    assert Topics(gateway="gw1").available == "fer/gateways/gw1/available"
    assert topics.gateway_of_cameras_topic(topics.gateway_cameras("gw1")) == "gw1"
    # The store announces on the model store's own topic, which the gateways subscribe to.
    assert topics.model_alias("ean", "stable") == "fer/models/ean/stable"


# -- the relay ------------------------------------------------------------------------------------


class Stream:
    """Reads /dashboard/stream in a thread, as a browser's EventSource would."""

    def __init__(self, url: str) -> None:
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        try:
            with self._client.stream("GET", url) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        with self._lock:
                            self.items.append(json.loads(line[6:]))
        except httpx.HTTPError:
            pass

    @property
    def open(self) -> bool:
        return self._thread.is_alive()

    def wait(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 15) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            with self._lock:
                return next((i for i in self.items if predicate(i)), None)

        return wait_until(found, timeout, what=what)

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def relay_app(make_settings: Callable[..., Settings], broker: Mosquitto) -> Iterator[str]:
    settings = make_settings(mqtt={"enabled": True, "port": broker.port, "reconnect_min_s": 1, "reconnect_max_s": 1})
    with live_server(create_app(settings)) as base:
        yield base


def test_relay_streams_every_gateway_and_survives_a_broker_restart(relay_app: str, broker: Mosquitto) -> None:
    # Another gateway's retained state is in the snapshot of a page that opens later.
    other = {"schema_version": 1, "camera": "door", "state": "online", "reason": None, "timestamp": 1.0}
    publish(broker.port, "fer/door/status", json.dumps(other).encode(), retain=True)
    time.sleep(0.3)
    stream = Stream(f"{relay_app}/dashboard/stream")
    try:
        snap = stream.wait(lambda i: i["type"] == "snapshot" and "fer/door/status" in i["retained"], "snapshot")
        assert snap["retained"]["fer/door/status"] == {"camera": "door", "kind": "status", "payload": other}
        stream.wait(lambda i: (i["type"] == "broker" and i["connected"]) or i.get("broker", {}).get("connected"),
                    "broker connected")  # fmt: skip

        event = {"schema_version": 1, "kind": "expression", "event_type": "expression_change", "id": "e-1",
                 "camera": "door", "track_id": 1, "label": "happy", "previous_label": None, "score": 0.9,
                 "timestamp": 2.0, "model_version": 1}  # fmt: skip
        publish(broker.port, "fer/door/events", json.dumps(event).encode())
        got = stream.wait(lambda i: i["type"] == "message" and i["topic"] == "fer/door/events", "relayed event")
        assert (got["camera"], got["kind"], got["payload"]) == ("door", "events", event)
        # Not JSON: not ours, not relayed (and nothing breaks).
        publish(broker.port, "fer/door/events", b"\x89PNG not json")

        broker.kill()
        stream.wait(lambda i: i["type"] == "broker" and not i["connected"], "broker disconnected")
        broker.start()  # the same object, so the fixture stops this broker too
        n = len(stream.items)
        stream.wait(lambda i: i in stream.items[n:] and i["type"] == "broker" and i["connected"], "reconnected", 30)
        publish(broker.port, "fer/door/events", json.dumps({**event, "id": "e-2"}).encode())
        stream.wait(lambda i: i["type"] == "message" and i["payload"].get("id") == "e-2", "event after restart")
        assert not [i for i in stream.items if i["type"] == "message" and "PNG" in json.dumps(i)]
        # A page opened now gets the recent events in its snapshot.
        late = Stream(f"{relay_app}/dashboard/stream")
        snap = late.wait(lambda i: i["type"] == "snapshot", "late snapshot")
        assert [e["payload"]["id"] for e in snap["events"]] == ["e-1", "e-2"]
        late.close()
    finally:
        stream.close()


def test_the_stream_outlives_the_body_timeout(make_settings: Callable[..., Settings], broker: Mosquitto,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """The body deadline is the body's: a stream, whose request has none, stays open past it."""
    settings = make_settings(mqtt={"enabled": True, "port": broker.port}, api={"body_timeout_s": 1})
    with live_server(create_app(settings)) as base:
        stream = Stream(f"{base}/dashboard/stream")
        stream.wait(lambda i: i["type"] == "snapshot", "snapshot")
        time.sleep(2.5)
        assert stream.open, "the stream was cut at the body timeout"
        publish(broker.port, "fer/door/events", json.dumps({"type": "new", "id": "late"}).encode())
        stream.wait(lambda i: i["type"] == "message" and i["payload"].get("id") == "late", "event after the timeout")
        stream.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_page_and_state(relay_app: str) -> None:
    page = httpx.get(f"{relay_app}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Own files only: nothing is loaded from another origin.
    assert "http://" not in page.text and "https://" not in page.text
    assets = sorted(p.name for p in STATIC.iterdir() if p.suffix in {".js", ".css"})
    assert {"app.js", "app.css"} <= set(assets)
    for asset in assets:
        r = httpx.get(f"{relay_app}/dashboard/static/{asset}")
        text = r.text.replace('"http://www.w3.org/2000/svg"', "")  # the SVG namespace: a name, never fetched
        assert r.status_code == 200 and "http://" not in text and "https://" not in text, asset
        # A browser runs a module script only when it comes as JavaScript.
        if asset.endswith(".js"):
            assert r.headers["content-type"].split(";")[0] in {"text/javascript", "application/javascript"}, asset
    state = httpx.get(f"{relay_app}/dashboard/state").json()
    assert state["ready"] and state["admin"] is True
    assert state["model"]["labels"] == LABELS
    assert state["mqtt"]["state"] in {"connected", "disconnected"}


# -- the timeline's history -----------------------------------------------------------------------


def expression(label: str | None, t: float, track_id: int | None = 7) -> bytes:
    return json.dumps({"schema_version": 1, "gateway": "gw-b", "camera": "door", "label": label,
                       "score": 0.8 if label else None, "track_id": track_id if label else None,
                       "faces": 1 if label else 0, "timestamp": t, "model_version": 1,
                       "current_zones": []}).encode()  # fmt: skip


def anomaly(kind: str, t0: float, end: float | None, top: float) -> bytes:
    return json.dumps({"schema_version": 1, "gateway": "gw-b", "kind": "anomaly", "type": kind, "id": "a-1",
                       "camera": "door", "event_type": "sustained_negative_affect", "label": "sad", "score": top,
                       "top_score": top, "start_time": t0, "end_time": end, "track_id": 7, "previous_label": None,
                       "model_version": 1, "current_zones": []}).encode()  # fmt: skip


def test_the_relay_keeps_a_timeline_that_a_later_page_gets(relay_app: str, broker: Mosquitto) -> None:
    now = time.time()
    publish(broker.port, "fer/door/expression", expression("happy", now - 60), retain=True)
    publish(broker.port, "fer/door/analysis/state",
            json.dumps({"schema_version": 1, "camera": "door", "state": "OFF", "timestamp": now - 30}).encode(),
            retain=True)  # fmt: skip
    publish(broker.port, "fer/door/expression", expression(None, now - 30), retain=True)
    publish(broker.port, "fer/door/events", anomaly("new", now - 50, None, 0.7))
    publish(broker.port, "fer/door/events", anomaly("update", now - 50, None, 0.8))
    publish(broker.port, "fer/door/events", anomaly("end", now - 50, now - 40, 0.8))
    # Payloads the page cannot draw change nothing, and are still relayed.
    publish(broker.port, "fer/door/expression", json.dumps({"label": "x" * 65, "timestamp": now}).encode())
    publish(broker.port, "fer/door/events", json.dumps({"kind": "anomaly", "id": "bad"}).encode())

    live = Stream(f"{relay_app}/dashboard/stream")
    try:
        live.wait(lambda i: i["type"] == "snapshot", "snapshot")
        publish(broker.port, "fer/door/expression", expression("sad", now - 10), retain=True)
        # The label series only: an anomaly published above may reach the relay after the snapshot, and
        # is then a live timeline item of its own, labelled sad too.
        def sad_label(i: dict) -> bool:
            return i["type"] == "timeline" and i["series"] == "labels" and i["item"].get("label") == "sad"

        item = live.wait(sad_label, "a live point")
        assert item == {"type": "timeline", "camera": "door", "series": "labels",
                        "item": {"t": now - 10, "label": "sad", "score": 0.8}}  # fmt: skip

        # After a broker restart a gateway publishes its retained state again, as it was: no point twice.
        broker.kill()
        live.wait(lambda i: i["type"] == "broker" and not i["connected"], "broker gone")
        broker.start()
        n = len(live.items)
        live.wait(lambda i: i in live.items[n:] and i["type"] == "broker" and i["connected"], "reconnected", 30)
        publish(broker.port, "fer/door/expression", expression("happy", now - 60), retain=True)
        publish(broker.port, "fer/door/expression", expression("sad", now - 10), retain=True)
        publish(broker.port, "fer/door/events", anomaly("update", now - 50, None, 0.8))
        publish(broker.port, "fer/door/expression", expression("sad", now - 5, track_id=8), retain=True)
        live.wait(lambda i: i["type"] == "message" and i["payload"].get("track_id") == 8, "the last message")
        assert [i["item"]["t"] for i in live.items[n:] if i["type"] == "timeline"] == [now - 5]

        later = Stream(f"{relay_app}/dashboard/stream")
        snap = later.wait(lambda i: i["type"] == "snapshot", "a later page's snapshot")
        later.close()
    finally:
        live.close()
    assert snap["window_s"] == 900 and abs(snap["now"] - time.time()) < 5
    door = snap["timeline"]["door"]
    assert door["labels"] == [{"t": now - 60, "label": "happy", "score": 0.8}, {"t": now - 30, "label": None,
                              "score": None}, {"t": now - 10, "label": "sad", "score": 0.8},
                              {"t": now - 5, "label": "sad", "score": 0.8}]  # fmt: skip
    assert door["analysis"] == [{"t": now - 30, "state": "OFF"}]
    assert door["anomalies"] == [{"id": "a-1", "event_type": "sustained_negative_affect", "label": "sad",
                                  "score": 0.8, "start": now - 50, "end": now - 40}]  # fmt: skip
    # Labels, scores and times: no track id, no gateway's id for a face, nothing else.
    assert "track_id" not in json.dumps(snap["timeline"])


def test_the_history_is_bounded_in_time_points_and_cameras() -> None:
    history = History(window_s=100)
    for i in range(MAX_POINTS + 50):
        history.add("cam", "expression", {"label": "happy" if i % 2 else "sad", "score": 0.5, "timestamp": 1000 + i},
                    now=1000 + i)  # fmt: skip
    labels = history.snapshot(now=1000 + MAX_POINTS + 50)["cam"]["labels"]
    # Past the window, only the point whose label lasts into it stays.
    assert len(labels) == 101 and labels[0]["t"] == 1000 + MAX_POINTS + 50 - 101
    history = History(window_s=1e9)
    for i in range(MAX_POINTS + 50):
        history.add("cam", "expression", {"label": "happy", "score": 0.5, "timestamp": i}, now=i)
    assert len(history.snapshot(now=MAX_POINTS + 50)["cam"]["labels"]) == MAX_POINTS
    for i in range(MAX_CAMERAS + 5):
        history.add(f"c{i}", "analysis", {"state": "ON", "timestamp": 1.0}, now=1.0)
    cameras = history.snapshot(now=2.0)
    assert len(cameras) == MAX_CAMERAS and "c0" not in cameras and f"c{MAX_CAMERAS + 4}" in cameras
    # An anomaly's `update` delivered again after its `end` does not reopen it.
    history = History()
    for kind, end in (("new", None), ("end", 20.0), ("update", None)):
        history.add("cam", "events", json.loads(anomaly(kind, 10.0, end, 0.7)), now=30.0)
    assert history.snapshot(now=30.0)["cam"]["anomalies"][0]["end"] == 20.0


# -- the accuracy shown ---------------------------------------------------------------------------


def test_the_accuracy_is_named_for_what_it_measured(make_settings: Callable[..., Settings], store_root: Path) -> None:
    """A manifest figure taken with flip TTA (v1's) is never shown as what is served; a manifest of the
    served graph (what the trainer publishes now) is shown as served."""
    settings = make_settings()
    store = ModelStore(store_root)
    manifest = store.manifest("ean", store.resolve("ean", "stable"))
    vdir = store.version_dir("ean", manifest.version)

    def stable_with(tta: bool, figure: float) -> None:
        metrics = manifest.metrics.model_copy(update={"tta": tta, "val_accuracy": figure})
        files = {manifest.model_file: vdir / manifest.model_file}
        version = store.publish(manifest.model_copy(update={"version": None, "files": {}, "metrics": metrics}), files)
        store.set_alias("ean", "stable", version)

    stable_with(tta=True, figure=0.6473)
    with live_server(create_app(settings)) as base:
        shown = httpx.get(f"{base}/dashboard/state").json()["model"]["accuracy"]
        models = httpx.get(f"{base}/models").json()["served"]["accuracy"]
    assert shown == models == {"served": None, "flip_tta": 0.6473}
    stable_with(tta=False, figure=0.6612)
    with live_server(create_app(settings)) as base:
        assert httpx.get(f"{base}/dashboard/state").json()["model"]["accuracy"] == {"served": 0.6612, "flip_tta": None}
    # An INT8 variant of a served-graph manifest is shown with its own graph's figure, one pass.
    with_int8 = [v for v in store.versions("ean") if "int8" in store.manifest("ean", v).variants]
    assert with_int8, "the seed store keeps v1, which has an INT8 variant"
    source = store.manifest("ean", with_int8[0])
    files = {f: store.version_dir("ean", source.version) / f for f in (source.model_file, "model.int8.onnx")}
    metrics = source.metrics.model_copy(update={"tta": False})
    served = store.publish(source.model_copy(update={"version": None, "files": {}, "metrics": metrics}), files)
    int8 = load_version(store, "ean", served, variant="int8", threads=1, max_batch=1)
    assert accuracy(int8) == {"served": source.variants["int8"].val_accuracy, "flip_tta": None}


# -- latency --------------------------------------------------------------------------------------


def test_latency_quantiles_match_prometheus_and_follow_the_window() -> None:
    registry = CollectorRegistry()
    h = Histogram("fer_stage_seconds", "t", ["camera", "stage"], buckets=(0.001, 0.01, 0.1, 1.0), registry=registry)
    for _ in range(90):
        h.labels("c", "detect").observe(0.005)
    for _ in range(10):
        h.labels("c", "detect").observe(0.05)
    rows = read_buckets(registry)[("c", "detect")]
    # histogram_quantile: rank 50 of 90 in (0.001, 0.01] -> 0.001 + 0.009 * 50/90.
    assert quantile(0.5, rows) == pytest.approx(0.001 + 0.009 * 50 / 90)
    assert quantile(0.95, rows) == pytest.approx(0.01 + 0.09 * 5 / 10)
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None

    window = LatencyWindow(registry, window_s=60, every_s=5)
    first = window.summary(now=0.0)["c"]["detect"]
    assert first["count"] == 100 and first["p50_ms"] == pytest.approx(6.0, abs=0.01)
    for _ in range(50):
        h.labels("c", "detect").observe(0.5)
    later = window.summary(now=61.0)["c"]["detect"]
    assert later["count"] == 50 and later["p50_ms"] > 100, "only the last minute counts"


def test_a_camera_that_never_ran_has_no_rows_of_dashes() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, ["live", "hall"])
    for camera in ("live", "hall"):
        metrics.init_camera(camera)
    metrics.stage_seconds.labels("live", "total").observe(0.002)
    summary = LatencyWindow(registry).summary(now=0.0)
    assert summary["hall"] == {}
    assert list(summary["live"]) == ["total"] and summary["live"]["total"]["count"] == 1


# -- re-entry -------------------------------------------------------------------------------------


def track(tid: int, label: str) -> Track:
    probs = np.full(len(LABELS), 0.02, np.float32)
    probs[LABELS.index(label)] = 0.88
    return Track(tid, Box(10, 10, 50, 50), 0.0, probs)


def test_a_face_that_comes_back_within_the_window_sends_no_event() -> None:
    tracking = TrackingConfig(min_dwell_s=0.5, reentry_window_s=5.0)
    engine = RuleEngine("cam", RulesConfig.model_validate({"sustained_negative": {"enabled": False},
                                                            "abrupt_change": {"enabled": False}}),
                        tracking, LABELS)  # fmt: skip

    def run(t: Track, start: float, end: float) -> list:
        out = []
        now = start
        while now <= end:
            out += engine.on_frame([t], [], now)
            now += 0.1
        out += engine.on_frame([], [t], now)
        return [e for e in out if e.event_type == "expression_change"]

    first = run(track(1, "happy"), 0.0, 2.0)
    assert [(e.label, e.previous_label) for e in first] == [("happy", None)]
    assert run(track(2, "happy"), 4.0, 6.0) == [], "same face back after 2 s: a re-detection, not a change"
    changed = run(track(3, "sad"), 8.0, 10.0)
    assert [(e.label, e.previous_label) for e in changed] == [("sad", "happy")]
    # Past the window a returning face is news again.
    late = run(track(4, "sad"), 20.0, 22.0)
    assert [(e.label, e.previous_label) for e in late] == [("sad", None)]

    off = RuleEngine("cam", RulesConfig(), TrackingConfig(min_dwell_s=0.5, reentry_window_s=0), LABELS)
    engine = off
    assert len(run(track(1, "happy"), 0.0, 2.0)) == 1 and len(run(track(2, "happy"), 2.5, 4.0)) == 1
