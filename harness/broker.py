"""A real MQTT broker and a recording subscriber.

`Mosquitto` runs mosquitto on a free port (amqtt, from the dev extra, where no mosquitto is installed,
so that `make test` passes on a fresh machine); `Subscriber` records every message on its topics.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from harness.machine import free_port, terminate, wait_listening, wait_until

# TEST_WITHOUT_MOSQUITTO=1 acts as if mosquitto were not installed, to exercise the amqtt fallback
# (not FER_-prefixed: the service reads FER_* variables as settings).
HAVE_MOSQUITTO = not os.environ.get("TEST_WITHOUT_MOSQUITTO") and (
    shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()
)
HAVE_AMQTT = importlib.util.find_spec("amqtt") is not None
HAVE_BROKER = HAVE_MOSQUITTO or HAVE_AMQTT

# Run in a subprocess, so that kill() is still a real crash: argv is the JSON config, then the log file.
_AMQTT_MAIN = """
import asyncio, json, logging, sys
from amqtt.broker import Broker
logging.basicConfig(filename=sys.argv[2], level=logging.INFO)
logging.getLogger("transitions").setLevel(logging.WARNING)
async def main():
    with open(sys.argv[1]) as f:
        broker = Broker(json.load(f))
    await broker.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


class Mosquitto:
    """A mosquitto on a free port; kill() is SIGKILL, a crash, not a clean stop.

    ``persistent``: sessions and their queues are saved on every change, so that they outlive even a
    SIGKILL and whatever a persistent subscriber misses was lost by the publisher, not the broker.
    ``max_queued_messages``: per client (mosquitto's default is 1000; 0 is no limit).

    Where no mosquitto is installed, the same on an amqtt broker: anonymous TCP on 127.0.0.1, nothing kept
    across a restart, whatever the options. Tests that need mosquitto itself (password files, TLS) check
    HAVE_MOSQUITTO.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistent: bool = False,
        max_queued_messages: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        if not HAVE_MOSQUITTO:
            self.name = "amqtt"
            self.conf = workdir / "amqtt.json"
            self.log = workdir / "amqtt.log"
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            self.conf.write_text(json.dumps(config))
            self.command = [sys.executable, "-c", _AMQTT_MAIN, str(self.conf), str(self.log)]
            return
        self.name = "mosquitto"
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if persistent:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1",
                      "autosave_on_changes true"]  # fmt: skip
        else:
            lines.append("persistence false")
        if max_queued_messages is not None:
            lines.append(f"max_queued_messages {max_queued_messages}")
        # As root, mosquitto would switch to the `mosquitto` user, who cannot enter pytest's tmp dirs.
        lines += [f"user {getpass.getuser()}", f"log_dest file {self.log}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.command = [self.binary, "-c", str(self.conf)]

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # A Python interpreter importing amqtt takes longer to come up than mosquitto does.
        wait_listening(self.process, [self.port], self.name, self.log, timeout=10 if HAVE_MOSQUITTO else 30)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 5)
        self.process = None


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float = field(default_factory=time.time)  # wall clock, to compare with a payload's timestamp

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Records every message on the subscribed topics; reconnects and re-subscribes by itself.

    ``clean_session=False`` with a fixed ``client_id``: the broker queues for it while it is away.
    ``login`` (user, password) and ``ca`` (TLS) for a broker that asks for them, as the shipped one does.
    """

    def __init__(
        self,
        port: int,
        topics: tuple[str, ...] = ("#",),
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        qos: int = 1,
        login: tuple[str, str] | None = None,
        ca: Path | None = None,
        reconnect_s: tuple[float, float] = (1, 1),
    ) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._topics = topics
        self._qos = qos
        self.connected = threading.Event()
        client_id = client_id or f"sub-{port}-{id(self)}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        if login is not None:
            self.client.username_pw_set(*login)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._on_message
        # Seconds, fractions included: paho's annotations say int, its arithmetic takes floats.
        self.client.reconnect_delay_set(*reconnect_s)  # type: ignore[arg-type]
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe([(t, self._qos) for t in self._topics])
        # Give the SUBACK a moment before anyone relies on the subscription.
        threading.Timer(0.1, self.connected.set).start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # amqtt 0.12 also hands a connecting client the retained messages matching other clients'
        # subscriptions; drop what this subscriber never asked for (mosquitto never sends it).
        if not HAVE_MOSQUITTO and not any(mqtt.topic_matches_sub(t, msg.topic) for t in self._topics):
            return
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def snapshot(self, topic: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Message]], Any], timeout: float = 10.0, what: str = "message") -> Any:
        return wait_until(lambda: predicate(self.snapshot()), timeout, what=what)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
