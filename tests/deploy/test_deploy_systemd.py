"""deploy/fer-edge.service: systemd accepts it, and it runs the service with somewhere writable to keep state."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from service.config import load_settings
from tests.deploy.helpers import DEPLOY, duration_s, tool

UNIT = DEPLOY / "fer-edge.service"
PREFIX = "/opt/fer-edge"


def _entries(section: str) -> list[tuple[str, str]]:
    current, out = None, []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def _values(key: str, section: str = "Service") -> list[str]:
    return [v for k, v in _entries(section) if k == key]


def _environment() -> dict[str, str]:
    env = {}
    for value in _values("Environment"):
        env.update(item.split("=", 1) for item in shlex.split(value))
    return env


def test_systemd_analyze_verify_is_silent(tmp_path: Path):
    # verify insists that ExecStart's program exists, so the install prefix moves to a venv that does;
    # every other line is verified as shipped. It exits 0 on unknown keys, so any remark is a failure.
    python = tmp_path / "prefix" / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(PREFIX, str(tmp_path / "prefix")))
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120
    )
    remarks = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not remarks, result.stdout + result.stderr


def test_exec_start_runs_the_service_module():
    (exec_start,) = _values("ExecStart")
    argv = shlex.split(exec_start)
    assert argv[0] == f"{PREFIX}/.venv/bin/python"
    assert argv[1:4] == ["-m", "service", "--config"]


def test_state_and_store_are_writable_under_protect_system():
    # ProtectSystem=strict leaves only the StateDirectory writable; the store and the outbox must live there.
    (state_directory,) = _values("StateDirectory")
    writable = Path("/var/lib") / state_directory
    assert _values("ProtectSystem") == ["strict"]
    settings = load_settings(DEPLOY / "config.yaml", _environment())
    assert settings.state_dir.is_relative_to(writable)
    assert settings.outbox_path.is_relative_to(writable)
    assert settings.model.store.is_relative_to(writable)
    # The first start copies the seed store to exactly where the service will look.
    (seed,) = _values("ExecStartPre")
    assert f"{PREFIX}/model_store/seed {settings.model.store}" in seed


def test_stop_timeout_outlasts_the_outbox_flush():
    settings = load_settings(DEPLOY / "config.yaml", _environment())
    (timeout,) = _values("TimeoutStopSec")
    assert duration_s(timeout if not timeout.isdigit() else f"{timeout}s") >= settings.mqtt.outbox.flush_timeout_s + 10


def test_only_the_camera_is_allowed():
    assert _values("DevicePolicy") == ["closed"]
    assert _values("DeviceAllow") == ["char-video4linux rw"]
    assert _values("SupplementaryGroups") == ["video"]
