"""Several gateways on one broker (README, "Several gateways"): per-gateway availability and Last Will, the gateway in
every payload, one Home Assistant device per gateway, and a camera id claimed by two gateways."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from harness.broker import Mosquitto, Subscriber
from harness.faults import GatedProxy
from harness.machine import wait_until
from service.comms.mqtt import MqttPublisher
from service.comms.outbox import Outbox
from service.comms.payloads import CameraStatus, ExpressionChange
from service.config import MqttConfig, Settings
from service.metrics import Metrics

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def gateway(tmp_path: Path, port: int, gateway_id: str, cameras: Sequence[str]) -> MqttPublisher:
    cfg = MqttConfig.model_validate({"port": port, "reconnect_min_s": 1, "reconnect_max_s": 1})
    metrics = Metrics(CollectorRegistry(), cameras)
    outbox = Outbox(tmp_path / f"outbox-{gateway_id}.sqlite3", 1000, metrics)
    pub = MqttPublisher(cfg, outbox, metrics, [(c, c.upper()) for c in cameras], gateway_id)
    pub.set_labels(LABELS)
    return pub


def change(camera: str, i: int) -> ExpressionChange:
    return ExpressionChange(
        id=f"{camera}-{i}", camera=camera, track_id=1, label="happy", previous_label=None, score=0.9,
        timestamp=1000.0 + i, model_version=1,
    )  # fmt: skip


@pytest.fixture
def sub(broker: Mosquitto) -> Iterator[Subscriber]:
    s = Subscriber(broker.port)
    s.connected.wait(5)
    yield s
    s.close()


def last_state(sub: Subscriber, topic: str) -> str | None:
    msgs = sub.snapshot(topic)
    return msgs[-1].json()["state"] if msgs else None


def test_each_gateway_has_its_own_availability_will_device_and_payloads(
    tmp_path: Path, broker: Mosquitto, sub: Subscriber
) -> None:
    proxy = GatedProxy(broker.port)
    a = gateway(tmp_path, proxy.port, "gw-a", ["lobby"])
    b = gateway(tmp_path, broker.port, "gw-b", ["door"])
    a.start()
    b.start()
    try:
        wait_until(lambda: a.connected and b.connected, 10, what="both connected")
        # Distinct client ids, or the broker would take one gateway's session over to the other.
        assert (a.client_id, b.client_id) == ("fer-edge-gw-a", "fer-edge-gw-b")
        for gw in ("gw-a", "gw-b"):
            sub.wait_for(lambda ms, gw=gw: last_state(sub, f"fer/gateways/{gw}/available") == "online", what=gw)
        assert sub.snapshot("fer/available") == []

        a.publish_event(change("lobby", 0))
        b.publish_event(change("door", 0))
        a.set_camera_status(CameraStatus(camera="lobby", state="online", timestamp=1.0))
        # A dashboard's one subscription sees every camera of every gateway, each naming its gateway.
        events = sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/events")]) >= 2 and ms)
        by_camera = {m.json()["camera"]: m.json()["gateway"] for m in events if m.topic.endswith("/events")}
        assert by_camera == {"lobby": "gw-a", "door": "gw-b"}
        status = sub.wait_for(lambda ms: sub.snapshot("fer/lobby/status"))[-1].json()
        assert status["gateway"] == "gw-a"
        assert sub.snapshot("fer/gateways/gw-a/available")[-1].json()["gateway"] == "gw-a"
        late = Subscriber(broker.port, ("fer/gateways/+/cameras",))
        claims = late.wait_for(lambda ms: len(ms) >= 2 and ms, what="retained claims")
        late.close()
        assert {m.topic: (m.retain, m.json()["cameras"]) for m in claims} == {
            "fer/gateways/gw-a/cameras": (True, ["lobby"]),
            "fer/gateways/gw-b/cameras": (True, ["door"]),
        }

        # Home Assistant: one device per gateway, each available only while its own gateway is.
        configs = sub.wait_for(
            lambda ms: {m.topic: m.json() for m in ms if m.topic.startswith("homeassistant/device/")}
            if len({m.topic for m in ms if m.topic.startswith("homeassistant/device/")}) == 2 else None,
            what="two discovery configs",
        )  # fmt: skip
        dev_a = configs["homeassistant/device/fer_edge_gw-a/config"]
        dev_b = configs["homeassistant/device/fer_edge_gw-b/config"]
        assert dev_a["dev"]["ids"] == ["fer_edge_gw-a"] and dev_a["dev"]["name"] == "fer-edge gw-a"
        assert dev_a["availability"][0]["topic"] == "fer/gateways/gw-a/available"
        assert dev_b["availability"][0]["topic"] == "fer/gateways/gw-b/available"
        assert set(dev_a["cmps"]) == {"lobby_expression", "lobby_events", "lobby_status", "lobby_analysis"}
        uids = {c["unique_id"] for d in (dev_a, dev_b) for c in d["cmps"].values()}
        assert len(uids) == 8  # four entities per gateway, none shared

        # gw-a's network dies: its Will says offline, gw-b stays online.
        proxy.open.clear()
        proxy.sever()
        sub.wait_for(lambda ms: last_state(sub, "fer/gateways/gw-a/available") == "offline", 15, what="gw-a's Will")
        assert last_state(sub, "fer/gateways/gw-b/available") == "online"
        proxy.open.set()
        sub.wait_for(lambda ms: last_state(sub, "fer/gateways/gw-a/available") == "online", 15, what="gw-a back")
    finally:
        a.stop()
        b.stop()
        proxy.close()
    assert last_state(sub, "fer/gateways/gw-a/available") == "stopped"


def test_a_camera_id_used_by_two_gateways_is_reported_on_both(tmp_path: Path, broker: Mosquitto) -> None:
    a = gateway(tmp_path, broker.port, "gw-a", ["lobby", "hall"])
    b = gateway(tmp_path, broker.port, "gw-b", ["hall", "door"])
    a.start()
    b.start()
    try:
        # Each sees the other's retained claim, whichever connected first.
        wait_until(lambda: a.camera_clashes == {"hall": ["gw-b"]}, 10, what="clash seen by gw-a")
        wait_until(lambda: b.camera_clashes == {"hall": ["gw-a"]}, 10, what="clash seen by gw-b")
        assert a.metrics.camera_id_clash.labels("hall")._value.get() == 1
        assert a.metrics.camera_id_clash.labels("lobby")._value.get() == 0
    finally:
        b.stop()
    # gw-b is reconfigured without the clashing camera: its new claim clears the clash on gw-a.
    b2 = gateway(tmp_path / "b2", broker.port, "gw-b", ["door"])
    b2.start()
    try:
        wait_until(lambda: a.camera_clashes == {}, 10, what="clash cleared")
        assert a.metrics.camera_id_clash.labels("hall")._value.get() == 0
    finally:
        b2.stop()
        a.stop()


def test_gateway_id_is_checked_like_a_camera_id() -> None:
    assert Settings.model_validate({"gateway_id": "site1-gw_2"}).gateway_id == "site1-gw_2"
    with pytest.raises(ValueError, match="gateway_id"):
        Settings.model_validate({"gateway_id": "gw/1"})
