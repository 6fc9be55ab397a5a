"""Config: YAML + FER_ overrides, validated, with errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_and_shipped_config_validate() -> None:
    s = load_settings(None, {})
    assert (s.api.host, s.api.port, s.mqtt.port, s.mqtt.prefix, s.model.alias) == (
        "127.0.0.1", 8000, 1883, "fer", "stable",
    )  # fmt: skip
    shipped = load_settings(ROOT / "deploy" / "config.yaml", {})
    assert [c.id for c in shipped.cameras] == ["demo"]
    assert shipped.cameras[0].is_demo and shipped.cameras[0].loop


def test_yaml_and_env_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
mqtt: {host: broker.local, port: 1884}
cameras:
  - {id: front-door_1, source: 0}
  - {id: hall, source: rtsp://cam/stream, fps: 5}
""",
    )
    env = {
        "FER_MQTT__PORT": "1999",
        "FER_MQTT__USERNAME": "fer",
        "FER_MQTT__PASSWORD": "s3cret",
        "FER_CAMERAS__1__ENABLED": "false",
        "FER_API__TOKEN": "tok",
        "FER_CONFIG": "/ignored",
        "OTHER": "x",
    }
    s = load_settings(path, env)
    assert s.mqtt.host == "broker.local" and s.mqtt.port == 1999
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in s.model_dump_json()
    assert s.cameras[0].source == 0 and s.cameras[1].source == "rtsp://cam/stream"
    assert s.cameras[1].enabled is False
    assert s.api.token is not None and s.api.token.get_secret_value() == "tok"


def test_camera_rules_override_the_defaults_key_by_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
rules:
  sustained_negative: {threshold: 0.7, min_duration_s: 4}
cameras:
  - {id: a, source: a.avi}
  - id: b
    source: b.avi
    rules:
      sustained_negative: {min_duration_s: 1}
      abrupt_change: {enabled: false}
""",
    )
    s = load_settings(path, {})
    a, b = s.cameras
    assert (a.rules.sustained_negative.threshold, a.rules.sustained_negative.min_duration_s) == (0.7, 4)
    assert (b.rules.sustained_negative.threshold, b.rules.sustained_negative.min_duration_s) == (0.7, 1)
    assert a.rules.abrupt_change.enabled and not b.rules.abrupt_change.enabled


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("mqtt: {prot: 1}", {}, "mqtt.prot: unknown key"),
        ("cameras: [{id: 'bad id!', source: 0}]", {}, "cameras.0.id"),
        ("cameras: [{id: a, source: 0}, {id: a, source: 1}]", {}, "camera id 'a' is used twice"),
        ("mqtt: {port: 1883}", {"FER_MQTT__PORT": "seventy"}, "mqtt.port (from FER_MQTT__PORT)"),
        ("{}", {"FER_MQTT__HOSTT": "x"}, "mqtt.hostt (from FER_MQTT__HOSTT): unknown key"),
        ("{}", {"FER_CAMERAS__3__FPS": "5"}, "FER_CAMERAS__3__FPS: no list item"),
        ("rules: {abrupt_change: {from_labels: [fear], to_labels: [fear]}}", {}, "rules.abrupt_change"),
        ("mqtt: {password: x}", {}, "password is set but username is not"),
        ("- a list", {}, "must hold a mapping"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("mqtt: {hots: broker}", {}, "config error at mqtt.hots: unknown key (did you mean host?)"),
        ("{}", {"FER_MQTT__HOSTT": "x"}, "mqtt.hostt (from FER_MQTT__HOSTT): unknown key (did you mean host?)"),
        ("cameras: [{id: a, source: 0, fsp: 5}]", {}, "cameras.0.fsp: unknown key (did you mean fps?)"),
        ("mqtt: {outbox: {max_mesages: 5}}", {}, "mqtt.outbox.max_mesages: unknown key (did you mean max_messages?)"),
        # A zone named like a field is still a zone: the hint comes from the zone's own keys.
        ("cameras: [{id: a, source: 0, zones: {rules: {coordinates: '0,0,1,0,1,1', rulez: {}}}}]", {},
         "cameras.0.zones.rules.rulez: unknown key (did you mean rules?)"),
        ("cameras: [{id: a, source: 0, rules: {sustained_negative: {treshold: 0.5}}}]", {},
         "cameras.0.rules.sustained_negative.treshold: unknown key (did you mean threshold?)"),
        ("mqtt: {tls: {insecur: true}}", {}, "mqtt.tls.insecur: unknown key (did you mean insecure?)"),
    ],
)
def test_a_misspelt_key_names_the_closest_one(tmp_path: Path, text: str, env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env)
    assert str(info.value).endswith(expected), str(info.value)


def test_a_key_like_no_other_gets_no_guess(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "mqtt: {zzzzzz: 1}"), {})
    assert str(info.value) == "config error at mqtt.zzzzzz: unknown key"


def test_entry_point_reports_a_bad_key_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "api: {prot: 80}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "config error at api.prot: unknown key (did you mean port?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_store_cli_variable_is_not_a_service_setting(tmp_path: Path) -> None:
    """`python -m model_store` reads FER_MODEL_STORE; a shell that sets it must still start the service."""
    s = load_settings(None, {"FER_MODEL_STORE": str(tmp_path), "FER_MQTT__PORT": "1884"})
    assert s.mqtt.port == 1884
