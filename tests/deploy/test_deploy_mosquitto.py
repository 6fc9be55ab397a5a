"""deploy/mosquitto/: the shipped config on a real Mosquitto 2, open by default and locked by the password file."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
import pytest

from tests.deploy.conftest import MQTT_PASSWORD, MQTT_USER, Broker
from tests.deploy.helpers import compose, container_port

TRANSPORTS = {"mqtt": "tcp", "websockets": "websockets"}


def _client(broker: Broker, protocol: str, credentials: tuple[str, str] | None) -> tuple[mqtt.Client, str]:
    """A connected client (loop running) and the broker's answer to its CONNECT."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport=TRANSPORTS[protocol])
    if credentials:
        client.username_pw_set(*credentials)
    answers: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.put(str(reason))
    client.connect("127.0.0.1", broker.port(protocol))
    client.loop_start()
    try:
        return client, answers.get(timeout=10)
    except queue.Empty:
        client.loop_stop()
        pytest.fail(f"no CONNACK over {protocol}:\n{broker.log.read_text()}")


def _answer(broker: Broker, protocol: str, credentials: tuple[str, str] | None) -> str:
    client, answer = _client(broker, protocol, credentials)
    client.disconnect()
    client.loop_stop()
    return answer


def test_listeners_are_the_ports_compose_publishes(open_broker):
    # Both listeners must be declared, or Mosquitto 2 falls back to local-only mode.
    assert set(open_broker.listeners) == {"mqtt", "websockets"}
    published = {container_port(p) for p in compose()["services"]["mosquitto"]["ports"]}
    assert {shipped for shipped, _ in open_broker.listeners.values()} == published


def test_a_dashboard_on_websockets_sees_what_the_service_publishes_over_tcp(open_broker):
    dashboard, answer = _client(open_broker, "websockets", None)
    service, answer2 = _client(open_broker, "mqtt", None)
    try:
        assert answer == answer2 == "Success"
        received: queue.Queue[bytes] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        dashboard.on_message = lambda _c, _u, msg: received.put(msg.payload)
        dashboard.on_subscribe = lambda *_: subscribed.put(True)
        dashboard.subscribe("fer/+/events", qos=1)
        subscribed.get(timeout=10)
        service.publish("fer/cam0/events", b'{"type": "new"}', qos=1).wait_for_publish(timeout=10)
        assert received.get(timeout=10) == b'{"type": "new"}'
    finally:
        for client in (dashboard, service):
            client.disconnect()
            client.loop_stop()


@pytest.mark.parametrize("protocol", list(TRANSPORTS))
def test_password_file_locks_both_listeners(auth_broker, protocol):
    assert _answer(auth_broker, protocol, None) == "Not authorized"
    assert _answer(auth_broker, protocol, (MQTT_USER, "wrong")) == "Not authorized"
    assert _answer(auth_broker, protocol, (MQTT_USER, MQTT_PASSWORD)) == "Success"
