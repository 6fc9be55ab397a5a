"""What a new user meets first: the README's HTTP examples as written, a busy port, the trainer
without its extra, and the compose file passing every FER_ setting into the service."""

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

import cv2
import numpy as np
import pytest
import yaml

from service.app import create_app
from service.config import Settings
from tests.service.support import Mosquitto, Subscriber, live_server, one_face_frame

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def sh_block_after(heading: str) -> list[str]:
    """The first ```sh block of a README section, as its command lines."""
    section = README.split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block, heading
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def big_face_jpeg(path: Path) -> int:
    """A real face in a 1920×1440 photo with sensor-like noise: well above 96 KB as a JPEG."""
    image = cv2.resize(one_face_frame(), (1920, 1440), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).normal(0, 6, image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    path.write_bytes(buf.tobytes())
    return path.stat().st_size


@pytest.mark.skipif(not shutil.which("curl") or not shutil.which("base64"), reason="needs curl and base64")
def test_readme_http_examples_work_as_written(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    lines = sh_block_after("## HTTP API")
    assert any("-d @" in line or "--data-binary @face.json" in line for line in lines)
    assert big_face_jpeg(tmp_path / "face.jpg") > 200_000
    with live_server(create_app(make_settings())) as base:
        host = base.removeprefix("http://")
        env = {**os.environ, "FER_API__TOKEN": "test-token"}
        infer_answers = 0
        for line in lines:
            command = line.replace("localhost:8000", host)
            result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=120)  # fmt: skip
            assert result.returncode == 0, (line, result.stderr)
            if "curl" not in line:
                continue
            body = json.loads(result.stdout)
            assert body.get("error") is None, (line, body)
            if "/infer" in line:
                assert len(body["faces"]) == 1, (line, body)
                infer_answers += 1
        assert infer_answers == 3


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


def test_readme_uses_one_python_that_works_as_written() -> None:
    commands = re.findall(r"^(?:\$ )?([^\s`]*python3?) -m (?!venv)", README, flags=re.M)
    commands += re.findall(r"`([^\s`]*python3?) -m (?!venv)", README)
    assert commands and set(commands) == {".venv/bin/python"}, set(commands)
