"""What a new user meets first: the HTTP and switch commands of the README and of docs/ as written,
their MQTT samples against what the service sends, a busy port, the trainer without its extra, and
one python in every command."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from harness.broker import Mosquitto, Subscriber
from harness.images import face_crop, one_face_frame
from harness.service import live_server
from service.app import create_app
from service.config import Settings
from service.demo import Segment, write_clip
from service.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
README = "README.md"
# The pages the reference lives on, each cited where a test reads it.
MQTT_PAGE = "docs/mqtt.md"
HTTP_PAGE = "docs/http-api.md"


def section(doc: str, heading: str) -> str:
    """A section of a document of the repository (README.md or a page under docs/), up to the next
    heading of level 2 or 3."""
    parts = (ROOT / doc).read_text().split(f"\n{heading}\n", 1)
    assert len(parts) == 2, f"{doc} has no heading {heading!r}"
    return re.split(r"\n#{2,3} ", parts[1], maxsplit=1)[0]


def sh_blocks(doc: str, heading: str) -> list[list[str]]:
    """The ```sh blocks of a section, each as its command lines."""
    blocks = re.findall(r"```sh\n(.*?)```", section(doc, heading), flags=re.S)
    assert blocks, (doc, heading)
    return [[line for line in b.splitlines() if line.strip() and not line.startswith("#")] for b in blocks]


def json_sample(doc: str, heading: str) -> Any:
    """The ```json block of a section."""
    found = re.search(r"```json\n(.*?)```", section(doc, heading), flags=re.S)
    assert found, (doc, heading)
    return json.loads(found.group(1))


def commands(lines: list[str]) -> list[str]:
    """Lines joined where a backslash continues them."""
    out: list[str] = []
    for line in lines:
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1][:-1] + line.strip()
        else:
            out.append(line)
    return out


def started_with_token(lines: list[str]) -> str:
    """The token of the block's `FER_API__TOKEN=… make run`, the one line a test does not run as written."""
    tokens = [m.group(1) for line in lines if (m := re.match(r"FER_API__TOKEN=(\S+) make run\b", line))]
    assert len(tokens) == 1, lines
    return tokens[0]


def big_face_jpeg(path: Path) -> int:
    """A real face in a 1920×1440 photo with sensor-like noise: well above 96 KB as a JPEG."""
    image = cv2.resize(one_face_frame(), (1920, 1440), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).normal(0, 6, image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    path.write_bytes(buf.tobytes())
    return path.stat().st_size


def shape(value: Any) -> Any:
    """Keys in order, all the way down (a list by its first item): what a sample must share with the real thing."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


def test_the_shipped_face_is_the_demo_s_own() -> None:
    from service.demo import Segment, background, render, shipped_face

    shipped = cv2.imread(str(ROOT / "docs" / "face.jpg"))
    assert shipped is not None and shipped.shape == (480, 640, 3)
    frame = render(background(640, 480), shipped_face(), Segment(1.0), 0.0)
    assert np.abs(shipped.astype(np.int16) - frame).mean() < 2.0


@pytest.mark.skipif(not shutil.which("curl") or not shutil.which("base64"), reason="needs curl and base64")
def test_http_examples_work_as_written(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    """The README's /infer command and every command of the HTTP page's examples, run from the
    repository as they say, against a live server; then the same /infer commands on a photo too big
    for a command line."""
    (glance,) = sh_blocks(README, "### HTTP API")
    lines = sh_blocks(HTTP_PAGE, "## Examples")[0]
    for block in (glance, lines):
        assert "docs/face.jpg" in block[0], "the first example uses the face the repository ships"
    assert len(glance) == 1 and "/infer" in glance[0], glance
    token = started_with_token(lines)
    assert big_face_jpeg(tmp_path / "big.jpg") > 200_000
    samples = [json_sample(README, "### HTTP API"), json_sample(HTTP_PAGE, "## Examples")]
    with live_server(create_app(make_settings(api={"token": token}))) as base:
        host = base.removeprefix("http://")
        answers = []
        for image in ("docs/face.jpg", str(tmp_path / "big.jpg")):
            for line in glance + lines:
                if "make run" in line:
                    continue
                command = line.replace("localhost:8000", host).replace("docs/face.jpg", image)
                result = subprocess.run(["bash", "-c", command], cwd=ROOT, env={**os.environ, "FER_API__TOKEN": ""},
                                        capture_output=True, text=True, timeout=120)  # fmt: skip
                assert result.returncode == 0, (line, result.stderr)
                body = json.loads(result.stdout)
                assert body.get("error") is None, (line, body)
                if "/infer" in line:
                    assert len(body["faces"]) == 1, (line, body)
                    answers.append(body)
        assert len(answers) == 8
    # The sample answers are what docs/face.jpg gets from the served model today.
    real = answers[0]
    for sample in samples:
        assert shape(sample) == shape(real)
        assert sample["model"] == real["model"] and sample["model_version"] == real["model_version"]
        assert sample["faces"][0]["label"] == real["faces"][0]["label"]


@pytest.mark.skipif(not shutil.which("mosquitto_pub") or not shutil.which("curl"), reason="needs mosquitto_pub, curl")
def test_switch_commands_work_as_written(tmp_path: Path, broker: Mosquitto,
                                         make_settings: Callable[..., Settings]) -> None:
    """The MQTT page's switch commands: MQTT first, since `make run` sets no token; then the PUT, with
    the token the page starts the service with."""
    mqtt_lines, http_lines = (commands(b) for b in sh_blocks(MQTT_PAGE, "## The privacy switch"))
    assert [line.split(" -m ")[1].split()[0] for line in mqtt_lines] == ["OFF", "ON"]
    token = started_with_token(http_lines)
    (put,) = [line for line in http_lines if "curl" in line]
    clip = write_clip(tmp_path / "face.avi", face_crop(), [Segment(2.0, x=0.5, size=220)], fps=5)
    settings = make_settings(mqtt={"enabled": True, "port": broker.port}, api={"token": token},
                             cameras=[{"id": "demo", "source": str(clip), "loop": True, "fps": 5}])  # fmt: skip
    sub = Subscriber(broker.port, ("fer/demo/analysis/state",))
    sub.connected.wait(5)
    try:
        with live_server(create_app(settings)) as base:
            sub.wait_for(lambda ms: ms and ms[-1].json()["state"] == "ON", what="ON at start")
            for line in mqtt_lines:
                result = subprocess.run(["bash", "-c", line.replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {broker.port}")],
                                        capture_output=True, text=True, timeout=30)  # fmt: skip
                assert result.returncode == 0, (line, result.stderr)
                wanted = line.split(" -m ")[1].split()[0]
                sub.wait_for(lambda ms, w=wanted: ms and ms[-1].json()["state"] == w, what=f"{wanted} on the broker")
            result = subprocess.run(["bash", "-c", put.replace("localhost:8000", base.removeprefix("http://"))],
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["state"] == "ON", result.stdout
    finally:
        sub.close()


def inline_samples(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic kind, payload) of every JSON payload written inline, as `{"schema_version"…}`."""
    samples: list[tuple[str, dict[str, Any]]] = []
    for inline in re.findall(r"`(\{\"schema_version\".*?\})`", text):
        payload = json.loads(inline.replace(":…", ":0"))
        samples.append((mqtt_kind(None, payload), payload))
    return samples


def mqtt_samples() -> list[tuple[str, dict[str, Any]]]:
    """(topic kind, payload) of every JSON sample of the MQTT page (the table's, the events' and the
    session's) and of the README's MQTT glance."""
    text = (ROOT / MQTT_PAGE).read_text()
    glance = inline_samples(section(README, "### MQTT"))
    assert glance, "the README shows one payload at a glance"
    samples = inline_samples(text) + glance
    session = re.search(r"```\n\$ mosquitto_sub .*?\n(.*?)```", text, flags=re.S)
    assert session
    for line in session.group(1).splitlines():
        topic, _, payload = line.partition(" ")
        if payload.startswith("{"):
            samples.append((mqtt_kind(topic, json.loads(payload)), json.loads(payload)))
    return samples


def mqtt_kind(topic: str | None, payload: dict[str, Any]) -> str:
    """available, status, expression, analysis, expression-event or anomaly-event."""
    if "service_version" in payload:
        return "available"
    if "kind" in payload:
        return f"{payload['kind']}-event"
    if topic is not None:
        return "analysis" if topic.endswith("/analysis/state") else topic.rsplit("/", 1)[1]
    return "expression" if "faces" in payload else "status" if "reason" in payload else "analysis"


def test_mqtt_samples_match_what_the_service_sends(tmp_path: Path, broker: Mosquitto,
                                                   make_settings: Callable[..., Settings]) -> None:
    """Every sample has the fields, in the order, of a real payload of its kind, and the served model version."""
    clip = write_clip(tmp_path / "face.avi", face_crop(), [Segment(3.0, x=0.5, size=220)], fps=10)
    settings = make_settings(
        mqtt={"enabled": True, "port": broker.port},
        tracking={"min_dwell_s": 0.5},
        cameras=[
            {"id": "demo", "source": str(clip), "loop": True, "fps": 10},
            {"id": "hall", "source": str(tmp_path / "no-such-clip.avi")},  # its camera_fault is an anomaly
        ],
    )
    sub = Subscriber(broker.port, ("fer/#",))
    sub.connected.wait(5)
    runtime = Runtime(settings)
    runtime.start()
    served = runtime.models.require().version
    try:
        sub.wait_for(lambda ms: {"expression-event", "anomaly-event"} <= {mqtt_kind(m.topic, m.json()) for m in ms
                                                                          if m.payload.startswith(b"{")},
                     timeout=60, what="an expression change and an anomaly")  # fmt: skip
    finally:
        runtime.stop()
    sub.wait_for(lambda ms: [m for m in ms if m.topic == "fer/available" and m.json()["state"] == "stopped"],
                 what="stopped")  # fmt: skip
    sub.close()
    real: dict[str, dict[str, Any]] = {}
    for m in sub.snapshot():
        if m.payload.startswith(b"{"):
            real.setdefault(mqtt_kind(m.topic, m.json()), m.json())
    samples = mqtt_samples()
    assert {kind for kind, _ in samples} == set(real) == {"available", "status", "expression", "analysis",
                                                          "expression-event", "anomaly-event"}  # fmt: skip
    for kind, sample in samples:
        assert list(sample) == list(real[kind]), (kind, sample)
        assert sample["gateway"] is None
        if "model_version" in sample:
            assert sample["model_version"] == served, sample


def test_a_busy_port_is_named_before_the_broker_hears_of_us(tmp_path: Path, broker: Mosquitto) -> None:
    sub = Subscriber(broker.port, ("fer/#",))
    sub.connected.wait(5)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({
            "state_dir": str(tmp_path / "state"),
            "api": {"port": port},
            "mqtt": {"port": broker.port},
            "model": {"store": str(ROOT / "model_store" / "seed")},
        }))  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
        result = subprocess.run([sys.executable, "-m", "service", "--config", str(config)], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "FER_API__PORT" in result.stderr and f":{port}" in result.stderr
    assert "Traceback" not in result.stderr
    time.sleep(0.5)
    assert sub.snapshot() == [], "the broker heard from a service that could not start"
    sub.close()


def test_trainer_without_its_extra_says_which_to_install() -> None:
    # torch hidden as if it were not installed.
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['trainer', 'fit', '--help']; "
            "runpy.run_module('trainer', run_name='__main__', alter_sys=True)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ".[trainer]" in result.stderr and "torch" in result.stderr
    assert "download.pytorch.org/whl/cpu" in result.stderr


def test_docs_use_one_python_that_works_as_written() -> None:
    """Every `python -m` of README.md and of the pages under docs/ is the one `make` created."""
    found: dict[str, set[str]] = {}
    for path in [ROOT / README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        commands = re.findall(r"^(?:\$ )?([^\s`]*python3?) -m (?!venv)", text, flags=re.M)
        commands += re.findall(r"`([^\s`]*python3?) -m (?!venv)", text)
        found[path.relative_to(ROOT).as_posix()] = set(commands)
    assert found[README] == {".venv/bin/python"}, found[README]
    other = {doc: sorted(c - {".venv/bin/python"}) for doc, c in found.items() if c - {".venv/bin/python"}}
    assert not other, other
