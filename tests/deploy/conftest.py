"""A real Mosquitto 2 started as compose starts it, for the broker, bridge and smoke tests: the shipped
mqtt-auth script makes the logins, the ACL and the TLS certificate, then the shipped mosquitto.conf
runs on them, every listener on a free port."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.broker import Subscriber
from harness.machine import free_port, terminate, wait_listening
from tests.deploy.helpers import DEPLOY, tool

MQTT_AUTH = DEPLOY / "mosquitto" / "init" / "mqtt-auth.sh"
# The shipped listeners, by their port in mosquitto.conf (and in the container).
MQTT, MQTT_TLS, WEBSOCKETS = 1883, 8883, 9001


@dataclass(frozen=True)
class Listener:
    protocol: str  # mqtt or websockets
    tls: bool
    port: int  # where the test broker listens


class MqttAuth:
    """deploy/mosquitto/init/mqtt-auth.sh run as compose's mqtt-auth runs it, with the volume and the
    shipped files under ``root``: /auth is root/auth, /shipped holds the shipped acl and a conf.d."""

    def __init__(self, root: Path, conf_d: dict[str, str] | None = None) -> None:
        self.dir = root / "auth"
        self.shipped = root / "shipped"
        (self.shipped / "conf.d").mkdir(parents=True)
        shutil.copy(DEPLOY / "mosquitto" / "acl", self.shipped / "acl")
        for name, body in (conf_d or {}).items():
            (self.shipped / "conf.d" / name).write_text(body)
        self._tools = [tool("mosquitto_passwd"), tool("openssl")]

    def run(self, *args: str, stdin: str | None = None, tls_names: str = "") -> subprocess.CompletedProcess[str]:
        uid = str(os.getuid())  # the broker and the service run as this user here
        path = os.pathsep.join([*dict.fromkeys(str(Path(t).parent) for t in self._tools), os.environ["PATH"]])
        env = {"PATH": path, "AUTH_DIR": str(self.dir), "SHIPPED_DIR": str(self.shipped), "BROKER_UID": uid,
               "SERVICE_UID": uid, "TLS_NAMES": tls_names}  # fmt: skip
        result = subprocess.run(["sh", str(MQTT_AUTH), *args], input=stdin or "", env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, f"mqtt-auth {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        return result

    def password(self, user: str) -> str:
        return (self.dir / "users" / user).read_text().splitlines()[0]

    def login(self, user: str) -> tuple[str, str]:
        return user, self.password(user)

    @property
    def ca(self) -> Path:
        return self.dir / "tls" / "ca.crt"


def _render(conf: str, root: Path) -> tuple[str, dict[int, Listener]]:
    """The shipped config with container paths under root and each listener on a free port; nothing else changes."""
    found: list[list[Any]] = []  # [shipped port, protocol, tls, test port], in file order
    lines = []
    for line in conf.splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            found.append([int(words[1]), "mqtt", False, free_port()])  # a listener speaks mqtt unless told otherwise
            line = f"listener {found[-1][3]}"
        elif words[:1] == ["protocol"] and found:
            found[-1][1] = words[1]
        elif words[:1] == ["certfile"] and found:
            found[-1][2] = True
        lines.append(line.replace("/mosquitto/", f"{root}/"))
    # As root, Mosquitto would switch to the `mosquitto` user, who cannot enter pytest's private tmp dirs.
    lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n", {shipped: Listener(proto, tls, port) for shipped, proto, tls, port in found}


class Broker:
    """The shipped broker: mqtt-auth first, then mosquitto.conf (plus conf.d files); stop() and start() keep
    its ports and its persisted sessions."""

    def __init__(self, root: Path, conf_d: dict[str, str] | None = None) -> None:
        self.binary = tool("mosquitto")
        self.auth = MqttAuth(root)
        self.auth.run()
        (root / "config" / "conf.d").mkdir(parents=True)
        (root / "data").mkdir()
        text, self.listeners = _render((DEPLOY / "mosquitto" / "mosquitto.conf").read_text(), root)
        self.conf = root / "config" / "mosquitto.conf"
        self.conf.write_text(text)
        for name, body in (conf_d or {}).items():
            (root / "config" / "conf.d" / name).write_text(body.replace("/mosquitto/", f"{root}/"))
        self.log = root / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def port(self, shipped: int = MQTT) -> int:
        return self.listeners[shipped].port

    def start(self) -> Broker:
        with self.log.open("a") as out:
            self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        wait_listening(self.process, [listener.port for listener in self.listeners.values()], "mosquitto", self.log)
        return self

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence file (sessions and their queues) on the way out."""
        if self.process is not None:
            terminate(self.process, 10)
        self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "mosquitto").start()
    try:
        yield b
    finally:
        b.stop()


class Recorder(Subscriber):
    """A Subscriber logged in as one user, as every client of the shipped broker must be."""

    def __init__(
        self,
        port: int,
        login: tuple[str, str],
        topics: tuple[str, ...] = ("#",),
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        ca: Path | None = None,
    ) -> None:
        super().__init__(port, topics, client_id=client_id, clean_session=clean_session, login=login, ca=ca)


@pytest.fixture
def recorders() -> Iterator[Callable[..., Recorder]]:
    """Recorder(...) that is closed at the end of the test."""
    made: list[Recorder] = []

    def make(*args: Any, **kwargs: Any) -> Recorder:
        made.append(Recorder(*args, **kwargs))
        made[-1].connected.wait(10)
        return made[-1]

    yield make
    for recorder in made:
        recorder.close()
