"""A real Mosquitto 2 started from deploy/mosquitto/, for the broker and smoke tests."""

from __future__ import annotations

import getpass
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.helpers import DEPLOY, free_port, tool

MQTT_USER, MQTT_PASSWORD = "fer", "test-password"


@dataclass
class Broker:
    # protocol -> (port in the shipped config, port the test broker listens on)
    listeners: dict[str, tuple[int, int]]
    log: Path

    def port(self, protocol: str) -> int:
        return self.listeners[protocol][1]


def _render(conf: str, root: Path) -> tuple[str, dict[str, tuple[int, int]]]:
    """The shipped config with container paths under root and each listener on a free port; nothing else changes."""
    found: list[list] = []  # [protocol, shipped port, test port], in file order
    lines = []
    for line in conf.splitlines():
        if m := re.fullmatch(r"listener (\d+)", line.strip()):
            found.append(["mqtt", int(m.group(1)), free_port()])  # a listener speaks mqtt unless told otherwise
            line = f"listener {found[-1][2]}"
        elif (m := re.fullmatch(r"protocol (\S+)", line.strip())) and found:
            found[-1][0] = m.group(1)
        lines.append(line.replace("/mosquitto/", f"{root}/"))
    listeners = {protocol: (shipped, test) for protocol, shipped, test in found}
    # As root, Mosquitto would switch to the `mosquitto` user, who cannot enter pytest's private tmp dirs.
    lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n", listeners


def _wait_listening(process: subprocess.Popen, ports: list[int], log: Path) -> None:
    deadline = time.monotonic() + 10
    for port in ports:
        while True:
            if process.poll() is not None:
                pytest.fail(f"mosquitto exited with {process.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto is not listening on {port}:\n{log.read_text()}")
                time.sleep(0.05)


def start_broker(root: Path, *, auth: bool) -> Iterator[Broker]:
    mosquitto = tool("mosquitto")
    (root / "config" / "conf.d").mkdir(parents=True)
    (root / "data").mkdir()
    text, listeners = _render((DEPLOY / "mosquitto" / "mosquitto.conf").read_text(), root)
    conf = root / "config" / "mosquitto.conf"
    conf.write_text(text)
    if auth:
        example = (DEPLOY / "mosquitto" / "conf.d" / "auth.conf.example").read_text()
        (root / "config" / "conf.d" / "auth.conf").write_text(example.replace("/mosquitto/", f"{root}/"))
        passwd = tool("mosquitto_passwd")
        subprocess.run([passwd, "-b", "-c", str(root / "config" / "conf.d" / "passwd"), MQTT_USER, MQTT_PASSWORD],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
    log = root / "mosquitto.log"
    with log.open("w") as out:
        process = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(process, [port for _, port in listeners.values()], log)
        yield Broker(listeners, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def open_broker(tmp_path: Path) -> Iterator[Broker]:
    yield from start_broker(tmp_path / "mosquitto", auth=False)


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    yield from start_broker(tmp_path / "mosquitto", auth=True)
