"""The container's command and config, run here: the image's command on config.docker.yaml against the shipped broker,
logins, ACL and all, and on 0.0.0.0 as in the container, so with credentials required.

Only what Docker itself would change is overridden, through the same FER_ variables a user would set: the broker's
loopback address and free ports instead of the compose network, temporary directories instead of the volumes (the
service's password file and its API token among them), and the demo clip instead of /dev/video0. Every request
still goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from prometheus_client.parser import text_string_to_metric_families

from harness.machine import free_port
from harness.store import copy_store
from service.config import load_settings
from tests.deploy.conftest import Broker, Recorder
from tests.deploy.helpers import (
    DOCKER_CONFIG,
    SERVICE_DOCKERFILE,
    compose,
    dashboard_queries,
    duration_s,
    healthcheck_command,
    image_command,
    volume_targets,
)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_for(
    url: str, process: subprocess.Popen, log: Path, timeout: float = 90, headers: dict[str, str] | None = None
) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            status, body = _get(url, headers)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200:\n{log.read_text()[-4000:]}")


def _labels_used(expr: str) -> set[str]:
    grouped = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in group.split(",")}
    matched = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
    return (grouped | matched) - {""}


def _availability(broker: Broker, prefix: str) -> tuple[mqtt.Client, queue.Queue[str]]:
    """A dashboard's subscriber to the service's availability topic, and the states it receives in order."""
    states: queue.Queue[str] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set(*broker.auth.login("dashboard"))
    client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/available", qos=1)
    client.on_message = lambda _c, _u, msg: states.put(json.loads(msg.payload)["state"])
    client.connect("127.0.0.1", broker.port())
    client.loop_start()
    return client, states


def _next_state(states: queue.Queue[str], wanted: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            seen.append(states.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            break
        if seen[-1] == wanted:
            return
    raise AssertionError(f"availability never became {wanted!r}; saw {seen}")


def _switch(broker: Broker, user: str, topic: str, state: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set(*broker.auth.login(user))
    client.connect("127.0.0.1", broker.port())
    client.loop_start()
    client.publish(topic, state, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def _analysis(recorder: Recorder, topic: str) -> str | None:
    states = recorder.snapshot(topic)
    return json.loads(states[-1].payload)["state"] if states else None


def test_image_command_serves_the_docker_config(
    broker: Broker, recorders: Callable[..., Recorder], tmp_path: Path
) -> None:
    settings = load_settings(DOCKER_CONFIG, {})
    command = image_command(SERVICE_DOCKERFILE)
    assert command[0] == "python" and command[command.index("--config") + 1] == "/etc/fer-edge/config.yaml"
    argv = [sys.executable, *command[1:]]
    argv[argv.index("--config") + 1] = str(DOCKER_CONFIG)

    store = tmp_path / "models"
    copy_store(store)
    port = free_port()
    # Where compose mounts the mqtt-auth volume in the service's container: here, the files mqtt-auth made.
    (volume_mount,) = [t for t, s in volume_targets(compose()["services"]["fer-service"]).items() if s == "mqtt-auth"]
    assert settings.api.host == "0.0.0.0" and settings.api.token_file and settings.mqtt.password_file
    token_file = broker.auth.dir / settings.api.token_file.relative_to(volume_mount)
    bearer = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
    env |= {
        "FER_API__PORT": str(port),
        "FER_MQTT__HOST": "127.0.0.1",
        "FER_MQTT__PORT": str(broker.port()),
        # The service logs in to the broker as its own user, and takes its API token from the same volume.
        "FER_MQTT__PASSWORD_FILE": str(broker.auth.dir / settings.mqtt.password_file.relative_to(volume_mount)),
        "FER_API__TOKEN_FILE": str(token_file),
        "FER_STATE_DIR": str(tmp_path / "state"),
        "FER_MODEL__STORE": str(store),
        "FER_CAMERAS__0__SOURCE": "demo",
        "FER_CAMERAS__0__LOOP": "true",
    }
    camera = settings.cameras[0].id
    watcher, states = _availability(broker, settings.mqtt.prefix)
    dashboard = recorders(broker.port(), broker.auth.login("dashboard"), (f"{settings.mqtt.prefix}/#",))
    log = tmp_path / "service.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/healthz", process, log)
        # Off loopback, as in its container: ready, for whoever sends the token mqtt-auth made.
        _wait_for(f"{base}/readyz", process, log, headers=bearer)
        assert _get(f"{base}/readyz")[0] == 401
        _next_state(states, "online")

        # The image's HEALTHCHECK, pointed at this port, passes against the real service.
        probe = healthcheck_command()
        probe = [sys.executable, *(a.replace(f":{settings.api.port}/", f":{port}/") for a in probe[1:])]
        assert subprocess.run(probe, timeout=30).returncode == 0

        # Every series and label the Grafana dashboard queries is in the real scrape, with Prometheus' token.
        assert _get(f"{base}/metrics")[0] == 401
        status, body = _get(f"{base}/metrics", bearer)
        assert status == 200
        labels: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
        for title, expr in dashboard_queries():
            used = set(re.findall(r"\bfer_[a-z_]+\b", expr))
            assert used <= set(labels), f"{title}: {sorted(used - set(labels))} missing from /metrics"
            available = set().union(*(labels[name] for name in used))
            assert _labels_used(expr) <= available, f"{title}: labels {sorted(_labels_used(expr) - available)}"

        # End to end with its own user: the demo face's events reach a dashboard; a dashboard's switch command
        # never reaches the service, an admin's does.
        dashboard.wait_for(lambda ms: [m for m in ms if m.topic == f"fer/{camera}/events"], 90, what="an event")
        state_topic, set_topic = f"fer/{camera}/analysis/state", f"fer/{camera}/analysis/set"
        assert _analysis(dashboard, state_topic) == "ON"
        _switch(broker, "dashboard", set_topic, b"OFF")
        time.sleep(2.0)
        assert _analysis(dashboard, state_topic) == "ON"
        _switch(broker, "admin", set_topic, b"OFF")
        dashboard.wait_for(lambda ms: _analysis(dashboard, state_topic) == "OFF", 20, what="the admin's OFF")

        # SIGTERM, as `docker stop` sends it: the service says `stopped` and exits within the grace period.
        grace = duration_s(compose()["services"]["fer-service"]["stop_grace_period"])
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down; Docker and systemd count both as a clean stop.
        assert process.wait(timeout=grace) in (0, -signal.SIGTERM), log.read_text()[-4000:]
        assert time.monotonic() - started < grace
        _next_state(states, "stopped")
        assert bearer["Authorization"].removeprefix("Bearer ") not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        watcher.disconnect()
        watcher.loop_stop()
