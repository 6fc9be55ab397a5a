"""The dashboard's view of the broker: a subscriber of every gateway's topics, relayed to browsers.

It subscribes to `<prefix>/+/events` and the retained per-camera topics with a client of its own
(see `EventRelay.__init__` for why not the publisher's), so one page sees every gateway on the
broker, not only this one. Browsers get the messages as server-sent events, which
work with any broker (no websockets listener needed). It relays what MQTT carries and nothing
else: labels, scores, times and ids, never a pixel. It also keeps each camera's last minutes of
labels, switch states and anomalies (`history.py`), so that a page opened later draws the same timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt

from service.comms.mqtt import make_client
from service.comms.topics import CameraTopic, Topics
from service.config import MqttConfig
from service.dashboard.history import History

logger = logging.getLogger(__name__)

# A browser that reads slower than this many messages behind is dropped; EventSource reconnects it
# and the snapshot it gets then is complete again.
_QUEUE_SIZE = 1000
# The camera topics the timeline is drawn from, by the name the history knows them by.
_HISTORY_KINDS: dict[CameraTopic, str] = {"expression": "expression", "events": "events", "analysis/state": "analysis"}


class EventRelay:
    def __init__(self, cfg: MqttConfig, client_id: str, max_events: int = 200) -> None:
        self.cfg = cfg
        self._topics = Topics(cfg.prefix)
        self._lock = threading.Lock()
        self._retained: dict[str, Any] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._history = History()
        self._listeners: dict[asyncio.Queue[dict[str, Any] | None], asyncio.AbstractEventLoop] = {}
        self._connected = False
        # A client of its own rather than the publisher's `subscribe`. The publisher's network thread
        # reads the acks its outbox waits for, and what it subscribes to is a few control messages for
        # this gateway. The relay takes in every camera of every gateway, and the whole site's
        # retained state at once after each reconnect, just when the outbox drains its backlog: on one
        # connection, this gateway's delivery would slow as the site grows, and whenever a page's
        # snapshot holds `_lock`. The cost is one more connection, with the same login.
        self.client = make_client(cfg, f"{client_id}-dashboard")
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            self._connected = False
            listeners = list(self._listeners.items())
            self._listeners.clear()
        for queue, loop in listeners:
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(queue.put_nowait, None)

    # -- broker side (paho's thread) -------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                    properties: object) -> None:  # fmt: skip
        if getattr(reason_code, "is_failure", False):
            return
        client.subscribe([(t, 1) for t in self._topics.every_camera])
        with self._lock:
            self._connected = True
            self._broadcast({"type": "broker", "connected": True})

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason_code: object,
                       properties: object) -> None:  # fmt: skip
        with self._lock:
            self._connected = False
            self._broadcast({"type": "broker", "connected": False})

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        where = self._topics.camera_topic(msg.topic)
        if where is None:
            return  # not a camera's topic, so nothing this client subscribed to
        # The page is told whose topic it is and which one, so that only topics.py parses topics.
        camera, what = where
        if not msg.payload:
            # An empty retained payload clears the topic (a removed camera).
            with self._lock:
                self._retained.pop(msg.topic, None)
                self._broadcast({"type": "cleared", "topic": msg.topic, "camera": camera, "kind": what})
            return
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return  # not one of ours: every fer-edge payload is JSON
        if not isinstance(payload, dict):
            return
        now = time.time()
        item = {"type": "message", "topic": msg.topic, "camera": camera, "kind": what, "payload": payload,
                "received_at": now}  # fmt: skip
        with self._lock:
            if what == "events":
                self._events.append(item)
            else:
                self._retained[msg.topic] = {"camera": camera, "kind": what, "payload": payload}
            self._broadcast(item)
            kind = _HISTORY_KINDS.get(what)
            if kind is not None:
                change = self._history.add(camera, kind, payload, now)
                if change is not None:
                    self._broadcast(change)

    def _broadcast(self, item: dict[str, Any]) -> None:
        """Called with the lock held, so every listener sees the messages in the broker's order."""
        for queue, loop in list(self._listeners.items()):
            try:
                loop.call_soon_threadsafe(self._offer, queue, item)
            except RuntimeError:
                self._listeners.pop(queue, None)

    def _offer(self, queue: asyncio.Queue[dict[str, Any] | None], item: dict[str, Any]) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            with self._lock:
                self._listeners.pop(queue, None)
            queue.get_nowait()
            queue.put_nowait(None)

    # -- browser side (the event loop) -----------------------------------------------------------

    def listen(self) -> tuple[dict[str, Any], asyncio.Queue[dict[str, Any] | None]]:
        """A snapshot of what is known now, and a queue of what comes after it (None: closed)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_QUEUE_SIZE)
        with self._lock:
            now = time.time()
            snapshot = {
                "type": "snapshot",
                "broker": {"connected": self._connected},
                "retained": dict(self._retained),
                "events": list(self._events),
                # The page draws its timeline against the service's clock, not the browser's.
                "now": now,
                "window_s": self._history.window_s,
                "timeline": self._history.snapshot(now),
            }
            self._listeners[queue] = asyncio.get_running_loop()
        return snapshot, queue

    def forget(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        with self._lock:
            self._listeners.pop(queue, None)
