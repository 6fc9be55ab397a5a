"""The MQTT publisher against a real mosquitto: exact topics and payloads, Last Will, discovery,
the outbox through a broker crash and an outage that overflows it, and what a clean stop leaves retained."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from harness.broker import Mosquitto, Subscriber
from harness.faults import GatedProxy
from harness.images import face_crop
from harness.machine import free_port, wait_until
from service.comms.mqtt import MqttPublisher
from service.comms.outbox import Outbox
from service.comms.payloads import AnomalyEvent, CameraStatus, ExpressionChange, ExpressionState
from service.config import MqttConfig, Settings
from service.demo import Segment, write_clip
from service.metrics import Metrics
from service.runtime import Runtime
from tests.service.conftest import needs_broker

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def make_publisher(tmp_path: Path, port: int, max_messages: int = 1000, client_id: str = "fer-test") -> MqttPublisher:
    cfg = MqttConfig.model_validate(
        {
            "port": port,
            "client_id": client_id,
            "reconnect_min_s": 1,
            "reconnect_max_s": 1,
            "outbox": {"flush_timeout_s": 5, "ack_timeout_s": 5, "batch": 8},
        }
    )
    metrics = Metrics(CollectorRegistry(), ["cam1"])
    outbox = Outbox(tmp_path / f"outbox-{client_id}.sqlite3", max_messages, metrics)
    pub = MqttPublisher(cfg, outbox, metrics, cameras=[("cam1", "Camera 1")])
    pub.set_labels(LABELS)
    return pub


def change(i: int) -> ExpressionChange:
    return ExpressionChange(
        id=f"evt-{i:04d}", camera="cam1", track_id=1, label=LABELS[i % 7], previous_label=None,
        score=0.5, timestamp=1000.0 + i, model_version=1,
    )  # fmt: skip


def event_ids(sub: Subscriber) -> list[str]:
    """Ids in arrival order, first arrival only (delivery is at least once)."""
    seen: dict[str, None] = {}
    for m in sub.snapshot("fer/cam1/events"):
        seen.setdefault(m.json()["id"], None)
    return list(seen)


@pytest.fixture
def sub(broker: Mosquitto) -> Iterator[Subscriber]:
    s = Subscriber(broker.port)
    s.connected.wait(5)
    yield s
    s.close()


def test_topics_payloads_will_and_discovery(tmp_path: Path, broker: Mosquitto, sub: Subscriber) -> None:
    proxy = GatedProxy(broker.port)
    pub = make_publisher(tmp_path, proxy.port)
    pub.start()
    try:
        wait_until(lambda: pub.connected, 10, what="connect")
        online = sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/available"], what="online")[0].json()
        assert online["state"] == "online" and online["schema_version"] == 1
        disc = sub.wait_for(lambda ms: [m for m in ms if m.topic == "homeassistant/device/fer_edge/config"])[0]
        config = disc.json()
        assert config["cmps"]["cam1_expression"]["device_class"] == "enum"
        assert config["cmps"]["cam1_expression"]["options"] == [*LABELS, "none"]
        assert config["cmps"]["cam1_events"]["p"] == "event"
        assert config["cmps"]["cam1_events"]["state_topic"] == "fer/cam1/events"
        assert config["availability"][0]["topic"] == "fer/available"

        anomaly = AnomalyEvent(
            type="new", id="1.000000-abcdef", camera="cam1", event_type="sustained_negative_affect",
            label="sad", score=0.7, top_score=0.7, start_time=1.0, track_id=3, model_version=1,
        )  # fmt: skip
        pub.publish_event(change(0))
        pub.publish_event(anomaly)
        state = ExpressionState(
            camera="cam1", label="happy", score=0.8, track_id=1, faces=1, timestamp=2.0, model_version=1
        )
        pub.set_expression(state)
        pub.set_camera_status(CameraStatus(camera="cam1", state="online", timestamp=2.0))
        events = sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/cam1/events"][1:] and ms, what="events")
        events = [m for m in events if m.topic == "fer/cam1/events"]
        assert [m.payload for m in events] == [change(0).model_dump_json().encode(), anomaly.model_dump_json().encode()]
        assert all(not m.retain for m in events)

        # Retained state reaches a late subscriber.
        late = Subscriber(broker.port, ("fer/cam1/expression", "fer/cam1/status"))
        got = late.wait_for(lambda ms: len(ms) >= 2 and ms, what="retained")
        assert {m.topic: (m.retain, m.json()) for m in got} == {
            "fer/cam1/expression": (True, json.loads(state.model_dump_json())),
            "fer/cam1/status": (True, {"schema_version": 1, "gateway": None, "camera": "cam1", "state": "online",
                                       "reason": None, "timestamp": 2.0}),
        }  # fmt: skip
        late.close()

        # Home Assistant restarted: discovery is sent again.
        before = len(sub.snapshot("homeassistant/device/fer_edge/config"))
        sub.client.publish("homeassistant/status", b"online")
        sub.wait_for(
            lambda ms: len([m for m in ms if m.topic.endswith("fer_edge/config")]) > before, what="rediscovery"
        )

        # The connection dies: the broker publishes the Last Will; the client reconnects and
        # re-publishes online and the retained state.
        n_expr = len(sub.snapshot("fer/cam1/expression"))
        proxy.sever()
        will = sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/available" and b"offline" in m.payload])
        assert will[0].json()["state"] == "offline"
        sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/available"][-1].json()["state"] == "online",
                     what="online again")  # fmt: skip
        sub.wait_for(lambda ms: len([m for m in ms if m.topic == "fer/cam1/expression"]) > n_expr, what="republish")
    finally:
        pub.stop()
        proxy.close()
    last = sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/available" and b"stopped" in m.payload])
    assert last[0].json()["state"] == "stopped"
    assert sub.snapshot("fer/available")[-1].json()["state"] == "stopped"


def test_broker_killed_and_restarted_mid_run(tmp_path: Path, broker: Mosquitto, sub: Subscriber) -> None:
    """No event lost, order kept: the outbox holds what the dead broker could not take."""
    proxy = GatedProxy(broker.port)
    pub = make_publisher(tmp_path, proxy.port)
    pub.start()
    try:
        wait_until(lambda: pub.connected, 10, what="connect")
        for i in range(40):
            pub.publish_event(change(i))
        sub.wait_for(lambda ms: len(event_ids(sub)) == 40, what="first 40")
        for i in range(40, 50):  # in flight while the broker dies
            pub.publish_event(change(i))
        broker.kill()
        # The test's subscriber must be back before the service, or it would miss what the
        # service delivers meanwhile; the gate holds the service back until then.
        proxy.open.clear()
        proxy.sever()
        wait_until(lambda: not pub.connected, 10, what="disconnect")
        for i in range(50, 120):
            pub.publish_event(change(i))
            if i % 10 == 0:
                time.sleep(0.01)
        assert len(pub.outbox) > 0
        broker.start()
        sub.connected.wait(10)
        wait_until(lambda: sub.connected.is_set(), 10, what="subscriber back")
        proxy.open.set()
        for i in range(120, 150):
            pub.publish_event(change(i))
        sub.wait_for(lambda ms: len(event_ids(sub)) >= 150, timeout=30, what="all 150 events")
        assert event_ids(sub) == [f"evt-{i:04d}" for i in range(150)]
        wait_until(lambda: len(pub.outbox) == 0, 10, what="outbox drained")
        assert pub.metrics.registry.get_sample_value("fer_events_published_total", {"camera": "cam1"}) >= 150
        assert pub.metrics.registry.get_sample_value("fer_events_dropped_total") == 0
    finally:
        pub.stop()
        proxy.close()


@needs_broker
def test_outbox_overflow_drops_oldest_then_delivers_in_order(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "late-broker", port=free_port())
    proxy = GatedProxy(broker.port)
    proxy.open.clear()
    pub = make_publisher(tmp_path, proxy.port, max_messages=10)
    pub.start()
    sub = None
    try:
        for i in range(25):
            pub.publish_event(change(i))
        assert len(pub.outbox) == 10
        assert pub.metrics.registry.get_sample_value("fer_events_dropped_total") == 15
        assert pub.metrics.registry.get_sample_value("fer_events_queued") == 10
        assert pub.metrics.registry.get_sample_value("fer_mqtt_connected") == 0
        broker.start()
        sub = Subscriber(broker.port)
        wait_until(lambda: sub.connected.is_set(), 10, what="subscriber")
        proxy.open.set()
        sub.wait_for(lambda ms: len(event_ids(sub)) >= 10, timeout=20, what="outbox delivery")
        assert event_ids(sub) == [f"evt-{i:04d}" for i in range(15, 25)]
        assert pub.metrics.registry.get_sample_value("fer_mqtt_connected") == 1
    finally:
        pub.stop()
        proxy.close()
        if sub is not None:
            sub.close()
        broker.kill()


def test_events_can_be_sent_at_qos_2(tmp_path: Path, broker: Mosquitto) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="qos2-sub")
    client.on_message = lambda c, u, msg: got.append(msg.qos)
    client.connect("127.0.0.1", broker.port)
    client.subscribe("fer/+/events", qos=2)
    client.loop_start()
    cfg = MqttConfig.model_validate({"port": broker.port, "client_id": "fer-qos2", "events_qos": 2})
    metrics = Metrics(CollectorRegistry(), ["cam1"])
    pub = MqttPublisher(cfg, Outbox(tmp_path / "o.sqlite3", 100, metrics), metrics, cameras=[("cam1", "c")])
    try:
        time.sleep(0.3)
        pub.start()
        for i in range(3):
            pub.publish_event(change(i))
        wait_until(lambda: len(got) == 3, 10, what="three events")
        assert got == [2, 2, 2]
        wait_until(lambda: len(pub.outbox) == 0, 10, what="outbox drained after the QoS 2 handshakes")
    finally:
        pub.stop()
        client.loop_stop()
        client.disconnect()


def _split_packet(buf: bytes) -> tuple[bytes, bytes] | None:
    """The first whole MQTT packet and the rest: a type byte, then the remaining length as a base-128 varint."""
    length, mult = 0, 1
    for i in range(1, min(len(buf), 5)):
        length += (buf[i] & 0x7F) * mult
        mult *= 128
        if not buf[i] & 0x80:
            end = i + 1 + length
            return (buf[:end], buf[end:]) if len(buf) >= end else None
    return None


class PubrelDroppingProxy:
    """Forwards MQTT both ways but drops the client's PUBREL packets while ``drop`` is set: the broker then
    holds a QoS 2 message it acknowledged with PUBREC and never released to its subscribers."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.drop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._sock.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                continue
            upstream.settimeout(None)
            self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, from_client: bool) -> None:
        buf = b""
        try:
            while chunk := src.recv(65536):
                buf += chunk
                while (split := _split_packet(buf)) is not None:
                    packet, buf = split
                    if not (from_client and packet[0] >> 4 == 6 and self.drop.is_set()):
                        dst.sendall(packet)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._sock.close()
        for s in self._conns:
            with contextlib.suppress(OSError):
                s.close()


def test_qos_2_events_held_by_a_killed_broker_are_delivered_after_restart(tmp_path: Path, broker: Mosquitto) -> None:
    """QoS 2 events the broker acknowledged (PUBREC) but never released when it was killed reach the
    subscriber once it is back, and delivery resumes."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[str] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="qos2-restart-sub")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("fer/+/events", qos=2)
    sub.on_message = lambda c, u, msg: got.append(json.loads(msg.payload)["id"])
    sub.reconnect_delay_set(0.1, 0.5)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    proxy = PubrelDroppingProxy(broker.port)
    cfg = MqttConfig.model_validate({"port": proxy.port, "client_id": "fer-qos2-restart", "events_qos": 2,
                                     "reconnect_min_s": 0.5, "reconnect_max_s": 1})  # fmt: skip
    metrics = Metrics(CollectorRegistry(), ["cam1"])
    pub = MqttPublisher(cfg, Outbox(tmp_path / "o.sqlite3", 100, metrics), metrics, cameras=[("cam1", "c")])
    try:
        pub.start()
        wait_until(lambda: pub.connected, 10, what="connect")
        pub.publish_event(change(0))
        wait_until(lambda: got == ["evt-0000"], 10, what="a first event")
        proxy.drop.set()
        # More than a broker's default receive maximum (20) of QoS 2 messages in flight: re-sent all
        # at once after the reconnect, mosquitto refuses them (quota exceeded) on every reconnect.
        for i in range(1, 26):
            pub.publish_event(change(i))
        time.sleep(1.5)  # PUBLISH and PUBREC went through; the PUBRELs did not
        assert got == ["evt-0000"]
        broker.kill()
        proxy.drop.clear()
        broker.start()
        wait_until(lambda: {f"evt-{i:04d}" for i in range(26)} <= set(got), 30,
                   what="the events the killed broker never released")  # fmt: skip
        wait_until(lambda: len(pub.outbox) == 0, 10, what="outbox drained")
    finally:
        pub.stop()
        proxy.close()
        sub.loop_stop()
        sub.disconnect()


def test_a_clean_stop_leaves_no_face_retained(tmp_path: Path, broker: Mosquitto,
                                              make_settings: Callable[..., Settings]) -> None:
    """After a clean stop the retained expression says no face, once, beside the `offline` status,
    instead of the last smile (what Home Assistant would go on showing)."""
    clip = write_clip(tmp_path / "face.mp4", face_crop(), [Segment(4.0, x=0.5, size=220)], fps=10)
    settings = make_settings(
        mqtt={"enabled": True, "port": broker.port, "client_id": "fer-stop-test"},
        cameras=[{"id": "cam1", "source": str(clip), "loop": True, "fps": 10}],
    )
    sub = Subscriber(broker.port, ("fer/cam1/expression", "fer/cam1/status"))
    sub.connected.wait(5)
    runtime = Runtime(settings)
    runtime.start()
    try:
        sub.wait_for(lambda ms: [m for m in sub.snapshot("fer/cam1/expression") if m.json()["label"]], timeout=60,
                     what="a face's label")  # fmt: skip
    finally:
        runtime.stop()
    try:
        # The status comes after the expression, from one client at QoS 1: in that order here too.
        sub.wait_for(lambda ms: ms[-1].topic == "fer/cam1/status" and ms[-1].json()["reason"] == "stopped",
                     what="the stopped status")  # fmt: skip
    finally:
        sub.close()
    said = [m.json() for m in sub.snapshot("fer/cam1/expression")]
    assert said[-1]["label"] is None and said[-2]["label"] is not None, "no face is said once, not twice"
    # What Home Assistant, or any client that connects now, is handed.
    late = Subscriber(broker.port, ("fer/cam1/expression", "fer/cam1/status"))
    try:
        got = late.wait_for(lambda ms: len({m.topic for m in ms}) == 2 and ms, what="the retained state")
    finally:
        late.close()
    retained = {m.topic: m.json() for m in got if m.retain}
    expression, status = retained["fer/cam1/expression"], retained["fer/cam1/status"]
    assert (status["state"], status["reason"]) == ("offline", "stopped")
    assert (expression["label"], expression["score"], expression["track_id"], expression["faces"]) == (None, None,
                                                                                                       None, 0)
    assert expression["timestamp"] >= status["timestamp"] - 1
