"""deploy/mosquitto/conf.d/bridge.conf.example on two real Mosquitto 2 brokers: a gateway's local broker
bridged to a central one. Events reach the centre, a 30 s central outage loses none of them, and what
comes down from the centre does not loop back up. Both run the shipped config, logins and all: the bridge reaches the
centre's TLS listener as its `bridge` user."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from harness.machine import wait_until
from service.comms.mqtt import MqttPublisher
from service.comms.outbox import Outbox
from service.comms.payloads import ExpressionChange
from service.config import MqttConfig
from service.metrics import Metrics
from tests.deploy.conftest import MQTT_TLS, Broker, Recorder
from tests.deploy.helpers import DEPLOY

OUTAGE_S = 30.0
BRIDGE_PASSWORD = "central-bridge-password"


def bridge_conf(central: Broker, gateway_id: str) -> str:
    text = (DEPLOY / "mosquitto" / "conf.d" / "bridge.conf.example").read_text()
    assert "CENTRAL_HOST:8883" in text and "GATEWAY_ID" in text and "BRIDGE_PASSWORD" in text
    # The central broker's TLS listener, as a gateway on another host reaches it.
    return (text.replace("CENTRAL_HOST:8883", f"127.0.0.1:{central.port(MQTT_TLS)}")
            .replace("GATEWAY_ID", gateway_id).replace("BRIDGE_PASSWORD", BRIDGE_PASSWORD))  # fmt: skip


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    central = Broker(tmp_path / "central")
    # As its admin would: `docker compose run --rm mqtt-auth passwd bridge` on the central host.
    central.auth.run("passwd", "bridge", stdin=f"{BRIDGE_PASSWORD}\n")
    central.start()
    try:
        local = Broker(tmp_path / "gateway", {"bridge.conf": bridge_conf(central, "gw-a"),
                                              "central-ca.crt": central.auth.ca.read_text()}).start()  # fmt: skip
        try:
            yield central, local
        finally:
            local.stop()
    finally:
        central.stop()


def bridge_up(sub: Recorder) -> bool:
    states = sub.snapshot("fer/gateways/gw-a/bridge")
    return bool(states) and states[-1].payload == b"1"


def test_events_cross_the_bridge_and_survive_a_central_outage(tmp_path: Path, brokers: tuple[Broker, Broker]) -> None:
    central, local = brokers
    # A dashboard on the centre whose session the central broker keeps (and persists) while it is down.
    dashboard = Recorder(central.port(), central.auth.login("dashboard"), ("fer/+/events", "fer/gateways/#"),
                         client_id="central-dashboard", clean_session=False)  # fmt: skip
    metrics = Metrics(CollectorRegistry(), ["lobby"])
    cfg = MqttConfig.model_validate({
        "port": local.port(), "username": "fer", "password_file": str(local.auth.dir / "users" / "fer"),
        "reconnect_min_s": 1, "reconnect_max_s": 1})  # fmt: skip
    gateway = MqttPublisher(cfg, Outbox(tmp_path / "outbox.sqlite3", 10_000, metrics), metrics, [("lobby", "Lobby")],
                            "gw-a")  # fmt: skip
    gateway.start()
    sent: list[str] = []
    stop = threading.Event()

    def publish_steadily() -> None:
        i = 0
        while not stop.wait(0.2):
            event = ExpressionChange(id=f"e{i:05d}", camera="lobby", track_id=1, label="happy", previous_label=None,
                                     score=0.9, timestamp=time.time(), model_version=1)  # fmt: skip
            gateway.publish_event(event)
            sent.append(event.id)
            i += 1

    publisher = threading.Thread(target=publish_steadily, daemon=True)
    try:
        dashboard.connected.wait(10)
        dashboard.wait_for(lambda ms: bridge_up(dashboard), 30, what="bridge up")
        publisher.start()
        first = dashboard.wait_for(lambda ms: [m for m in ms if m.topic == "fer/lobby/events"], 20, what="an event")
        assert first[0].json()["gateway"] == "gw-a"
        assert dashboard.snapshot("fer/gateways/gw-a/available")[-1].json()["state"] == "online"

        central.stop()
        outage_started = len(sent)
        time.sleep(OUTAGE_S)
        during = len(sent) - outage_started
        central.start()
        # The bridge reconnects with backoff (at most 15 s apart) and flushes what the gateway queued.
        dashboard.wait_for(lambda ms: bridge_up(dashboard) and dashboard.connected.is_set(), 60, what="bridge back")
        time.sleep(2.0)
        stop.set()
        publisher.join(5)

        def received() -> list[str]:
            seen: dict[str, None] = {}
            for m in dashboard.snapshot("fer/lobby/events"):
                seen.setdefault(m.json()["id"], None)
            return list(seen)

        wait_until(lambda: set(received()) >= set(sent), 60, what="every event at the centre")
        assert during >= 100, "the outage must have covered events"
        # Nothing lost, and in the order the gateway produced them.
        assert received() == sent
    finally:
        stop.set()
        gateway.stop()
        dashboard.close()


def test_announcements_come_down_and_nothing_loops_back(brokers: tuple[Broker, Broker]) -> None:
    central, local = brokers
    at_centre = Recorder(central.port(), central.auth.login("admin"), ("fer/models/#", "fer/gateways/+/cameras"))
    at_gateway = Recorder(local.port(), local.auth.login("dashboard"),
                          ("fer/models/#", "fer/gateways/+/cameras", "fer/gateways/gw-a/bridge"))  # fmt: skip
    try:
        at_centre.connected.wait(10)
        at_gateway.wait_for(lambda ms: bridge_up(at_gateway), 30, what="bridge up")
        at_centre.client.publish("fer/models/ean/stable", b'{"version": 2}', qos=1, retain=True)
        at_centre.client.publish("fer/gateways/gw-b/cameras", b'{"cameras": ["door"]}', qos=1, retain=True)
        at_gateway.wait_for(lambda ms: len(ms) >= 3 and ms, 10, what="announcement and claim at the gateway")
        time.sleep(2.0)
        # Once each: the local broker's `fer/# out` did not send them back up.
        assert [m.topic for m in at_centre.snapshot()] == ["fer/models/ean/stable", "fer/gateways/gw-b/cameras"]
        assert len(at_gateway.snapshot("fer/models/ean/stable")) == 1
    finally:
        at_centre.close()
        at_gateway.close()
