"""MQTT publisher (paho-mqtt 2.x): owns the topics, the Last Will, the retained state and the outbox.

Events are written to the outbox first and a delivery thread sends them in order, deleting each
row once the broker acknowledged it: at least once and in order per camera (see `_deliver`).
Retained state lives in memory and is re-sent after every (re)connect, together with `online`
and the Home Assistant discovery (Frigate's most-cited bug was not recovering after a broker
restart). Callbacks never block: they set flags and publish.

In a fleet (``gateway_id`` set) every payload names the gateway, availability and the Last Will
are the gateway's own, and the retained camera claims of all gateways are watched so that two
gateways using one camera id are reported rather than silently mixed on ``<prefix>/<camera>/…``.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from pydantic import ValidationError

from service import __version__
from service.comms.base import MessageHandler
from service.comms.discovery import default_node_id, device_config
from service.comms.outbox import Outbox, OutboxRow
from service.comms.payloads import (
    AnalysisState,
    Availability,
    CameraStatus,
    Event,
    ExpressionState,
    GatewayCameras,
    GatewayModel,
    Payload,
)
from service.comms.topics import Topics
from service.config import MqttConfig
from service.config._base import write_private
from service.metrics import Metrics

logger = logging.getLogger(__name__)
QOS2_IN_FLIGHT = 10


# The secret part of the client id, kept in state_dir so that a restart resumes the same session.
CLIENT_ID_FILE = "mqtt-client-id"


def gateway_client_id(cfg: MqttConfig, gateway_id: str | None, secret: str | None = None) -> str:
    """``mqtt.client_id``, else one per gateway: a broker disconnects the older of two clients with one id.

    A broker keeps the newer of two clients with one id, and any user may connect with any id, so a
    well-known id would let a read-only user knock the service off the broker (and its last will
    would mark it offline). ``secret`` (see `client_id_secret`) makes the id one nobody else knows.
    """
    base = cfg.client_id or ("fer-edge" if gateway_id is None else f"fer-edge-{gateway_id}")
    return base if cfg.client_id or secret is None else f"{base}-{secret}"


def client_id_secret(state_dir: Path) -> str:
    """64 random bits, made once into ``state_dir`` (0600) and kept: MQTT publishes no client id, so
    only the broker's operator (its log) learns it."""
    path = state_dir / CLIENT_ID_FILE
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if len(secret) != 16 or not all(c in "0123456789abcdef" for c in secret):
        secret = secrets.token_hex(8)
        write_private(path, secret + "\n")
    return secret


def make_client(cfg: MqttConfig, client_id: str) -> mqtt.Client:
    """A client with the configured credentials, TLS and reconnect backoff; no callbacks yet."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.login_password())
    if cfg.tls.enabled:
        client.tls_set(
            ca_certs=str(cfg.tls.ca_certs) if cfg.tls.ca_certs else None,
            certfile=str(cfg.tls.certfile) if cfg.tls.certfile else None,
            keyfile=str(cfg.tls.keyfile) if cfg.tls.keyfile else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(cfg.tls.insecure)
    client.reconnect_delay_set(min_delay=cfg.reconnect_min_s, max_delay=cfg.reconnect_max_s)  # type: ignore[arg-type]
    return client


class MqttPublisher:
    def __init__(
        self,
        cfg: MqttConfig,
        outbox: Outbox,
        metrics: Metrics,
        cameras: Sequence[tuple[str, str]] = (),
        gateway_id: str | None = None,
        client_id: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.metrics = metrics
        self.gateway_id = gateway_id
        self.topics = Topics(cfg.prefix, cfg.discovery.prefix, gateway_id)
        self.client_id = client_id or gateway_client_id(cfg, gateway_id)
        self.node_id = cfg.discovery.node_id or default_node_id(gateway_id)
        self._cameras = list(cameras)
        self._handlers: dict[str, MessageHandler] = {}
        # camera id -> the other gateways that claim it too
        self._clashes: dict[str, set[str]] = {}
        self._claims: dict[str, set[str]] = {}
        self._labels: list[str] = []
        self._retained: dict[str, bytes] = {}
        self._retained_lock = threading.Lock()
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._acked = threading.Event()
        self._warned_unreachable = False
        self._thread: threading.Thread | None = None
        # paho re-sends every unfinished QoS 2 message at once after a reconnect, and a broker refuses
        # a client with more than its receive maximum in flight (mosquitto: 20, "quota exceeded") on
        # every reconnect, so delivery would never resume. Below that, it always fits.
        self._batch = cfg.outbox.batch if cfg.events_qos == 1 else min(cfg.outbox.batch, QOS2_IN_FLIGHT)
        self.client = self._make_client()

    # -- client ----------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = make_client(self.cfg, self.client_id)
        # The Last Will must be set before connecting: it is part of the CONNECT packet.
        will = Availability(state="offline", timestamp=time.time(), service_version=__version__)
        client.will_set(self.topics.available, self._dump(will), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        return client

    def _dump(self, payload: Payload) -> bytes:
        if self.gateway_id is not None:
            payload = payload.model_copy(update={"gateway": self.gateway_id})
        return payload.model_dump_json().encode()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def camera_clashes(self) -> dict[str, list[str]]:
        """Camera id -> the other gateways that claim it as well."""
        with self._retained_lock:
            return {cam: sorted(gws) for cam, gws in self._clashes.items() if gws}

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """``handler(topic, payload)`` runs on paho's network thread, which also reads the outbox's acks."""
        self._handlers[topic_filter] = handler
        if self.connected:
            self.client.subscribe(topic_filter, qos=1)

    def start(self) -> None:
        # connect_async + loop_start: the network thread keeps retrying with backoff, so a missing
        # broker never blocks or fails start-up.
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._deliver_loop, name="mqtt-outbox", daemon=True)
        self._thread.start()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                    properties: object) -> None:  # fmt: skip
        if getattr(reason_code, "is_failure", False):
            logger.warning("broker refused the connection: %s", reason_code)
            return
        logger.info("connected to broker %s:%s", self.cfg.host, self.cfg.port)
        self._warned_unreachable = False
        online = Availability(state="online", timestamp=time.time(), service_version=__version__)
        client.publish(self.topics.available, self._dump(online), qos=1, retain=True)
        if self.gateway_id is not None:
            claim = GatewayCameras(cameras=[cam for cam, _ in self._cameras], timestamp=time.time())
            client.publish(self.topics.gateway_cameras(self.gateway_id), self._dump(claim), qos=1, retain=True)
            client.subscribe(self.topics.all_gateway_cameras, qos=1)
        for topic_filter in list(self._handlers):
            client.subscribe(topic_filter, qos=1)
        if self.cfg.discovery.enabled:
            client.subscribe(self.topics.ha_status, qos=1)
            self._send_discovery()
        # Replay and mark connected under the lock, so a state set meanwhile is neither lost nor
        # overwritten by an older value (publish only queues; it does not block).
        with self._retained_lock:
            for topic, payload in self._retained.items():
                client.publish(topic, payload, qos=1, retain=True)
            self._connected.set()
        self.metrics.mqtt_connected.set(1)
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # Warn once per outage, not on every retry.
        log = logger.debug if self._warned_unreachable else logger.warning
        log("broker %s:%s unreachable; retrying with backoff, events wait in the outbox", self.cfg.host, self.cfg.port)
        self._warned_unreachable = True

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                       properties: object) -> None:  # fmt: skip
        if self._stopping.is_set():
            logger.info("disconnected from broker")
        elif self._connected.is_set():
            logger.warning("disconnected from broker: %s; reconnecting with backoff", reason_code)
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason_code: object,
                    properties: object) -> None:  # fmt: skip
        self._acked.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        # Home Assistant announces `online` after it restarts and expects discovery again.
        if msg.topic == self.topics.ha_status and msg.payload.strip() == b"online":
            self._send_discovery()
        other = self.topics.gateway_of_cameras_topic(msg.topic)
        if other is not None and other != self.gateway_id:
            self._on_claim(other, bytes(msg.payload))
        for topic_filter, handler in list(self._handlers.items()):
            if mqtt.topic_matches_sub(topic_filter, msg.topic):
                try:
                    handler(msg.topic, bytes(msg.payload))
                except Exception:
                    logger.exception("handler for %s failed", topic_filter)

    def _on_claim(self, other: str, payload: bytes) -> None:
        """Another gateway's retained camera list (empty: it was removed); recompute the clashes."""
        cameras: set[str] = set()
        if payload:
            try:
                cameras = set(GatewayCameras.model_validate_json(payload).cameras)
            except ValidationError:
                logger.warning("ignoring a malformed camera claim from gateway %s", other)
                return
        ours = {cam for cam, _ in self._cameras}
        with self._retained_lock:
            self._claims[other] = cameras
            for cam in ours:
                before = set(self._clashes.get(cam, set()))
                now = {gw for gw, cams in self._claims.items() if cam in cams}
                self._clashes[cam] = now
                for gw in now - before:
                    logger.error(
                        "camera id %r is also used by gateway %s: their events and state mix on %s; "
                        "camera ids must be unique per site", cam, gw, self.topics.events(cam),
                    )  # fmt: skip
                if before and not now:
                    logger.info("camera id %r is no longer claimed by another gateway", cam)
                self.metrics.camera_id_clash.labels(cam).set(1 if now else 0)

    def _send_discovery(self) -> None:
        if not self.cfg.discovery.enabled or not self._labels:
            return
        config = device_config(self.topics, self.node_id, self._cameras, self._labels, __version__, self.gateway_id)
        topic = self.topics.ha_device_config(self.node_id)
        self.client.publish(topic, json.dumps(config).encode(), qos=1, retain=True)

    # -- Publisher -------------------------------------------------------------------------------

    def publish_event(self, event: Event) -> None:
        self.outbox.put(self.topics.events(event.camera), event.camera, self._dump(event))
        self._wake.set()

    def _set_retained(self, topic: str, payload: bytes) -> None:
        with self._retained_lock:
            self._retained[topic] = payload
            if self.connected:
                self.client.publish(topic, payload, qos=1, retain=True)

    def set_expression(self, state: ExpressionState) -> None:
        self._set_retained(self.topics.expression(state.camera), self._dump(state))

    def set_camera_status(self, status: CameraStatus) -> None:
        self._set_retained(self.topics.status(status.camera), self._dump(status))

    def set_analysis_state(self, state: AnalysisState) -> None:
        self._set_retained(self.topics.analysis_state(state.camera), self._dump(state))

    def set_model_state(self, state: GatewayModel) -> None:
        """Fleet only: what this gateway serves, for whoever watches a rollout."""
        if self.gateway_id is not None:
            self._set_retained(self.topics.gateway_model(self.gateway_id), self._dump(state))

    def set_labels(self, labels: list[str]) -> None:
        if list(labels) != self._labels:
            self._labels = list(labels)
            if self.connected:
                self._send_discovery()

    # -- delivery --------------------------------------------------------------------------------

    def _deliver_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self._connected.wait(0.5):
                    continue
                rows = self.outbox.peek(self._batch)
                if not rows:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                self._deliver(rows)
            except Exception:
                logger.exception("outbox delivery failed; retrying")
                self._stopping.wait(1.0)

    def _deliver(self, rows: list[OutboxRow]) -> None:
        sent = [(row, self.client.publish(row.topic, row.payload, qos=self.cfg.events_qos)) for row in rows]
        # The guarantee is at least once, in order per camera: a row is deleted only after its ack.
        # paho re-sends unacknowledged messages itself after a reconnect, and waiting here across an
        # outage keeps the order; but a broker killed after it forwarded a message and before its
        # ack reached us, an ack that never comes while connected, or a service killed between the
        # ack and the delete, all send the event again. Every event carries a unique `id` for
        # subscribers to de-duplicate on. QoS 2 (`mqtt.events_qos`) removes only the broker's
        # re-sends of one delivery, not ours.
        waited = 0.0
        while not all(info.is_published() for _, info in sent):
            if self._stopping.is_set():
                break
            started = time.monotonic()
            self._acked.wait(0.05)
            self._acked.clear()
            if self._connected.is_set():
                waited += time.monotonic() - started
                if waited >= self.cfg.outbox.ack_timeout_s:
                    logger.warning("no ack for %s s; sending the unacknowledged events again", round(waited))
                    break
        acked = []
        for row, info in sent:
            if not info.is_published():
                break
            acked.append(row)
        self.outbox.delete([r.id for r in acked])
        for row in acked:
            self.metrics.events_published.labels(row.camera).inc()

    def _wait_published(self, info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if info.is_published():
                return True
            time.sleep(0.02)
        return info.is_published()

    def stop(self) -> None:
        """Flush the outbox while the broker is there, announce `stopped`, disconnect cleanly."""
        deadline = time.monotonic() + self.cfg.outbox.flush_timeout_s
        self._wake.set()
        while len(self.outbox) and self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.connected:
            stopped = Availability(state="stopped", timestamp=time.time(), service_version=__version__)
            info = self.client.publish(self.topics.available, self._dump(stopped), qos=1, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._wait_published(info, max(0.5, deadline - time.monotonic()))
        # A clean DISCONNECT keeps the broker from sending the Will (`offline`) over `stopped`.
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        if len(self.outbox):
            logger.warning("%s events stay in the outbox for the next start", len(self.outbox))
        self.outbox.close()
