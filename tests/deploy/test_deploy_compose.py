"""docker-compose.yml: valid by the Compose Specification and by docker-compose, in step with what it mounts."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from service.config import load_settings
from tests.deploy.helpers import (
    COMPOSE_FILE,
    DOCKER_CONFIG,
    REPO,
    SERVICE_DOCKERFILE,
    compose,
    container_port,
    duration_s,
    image_command,
    tool,
    volume_targets,
)

SCHEMA_DIR = Path(__file__).parent / "compose-spec"
PROFILES = ["--profile", "train", "--profile", "monitoring"]


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(document: dict) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in _validator().iter_errors(document)]


def test_vendored_schema_is_the_recorded_copy():
    # SOURCE.md names the release it came from by this hash; a hand edit would make the check meaningless.
    recorded = re.search(r"sha256 `([0-9a-f]{64})`", (SCHEMA_DIR / "SOURCE.md").read_text())
    assert recorded, "SOURCE.md records no sha256"
    assert hashlib.sha256((SCHEMA_DIR / "compose-spec.json").read_bytes()).hexdigest() == recorded.group(1)


def test_compose_file_follows_the_compose_specification():
    assert _errors(compose()) == []


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("fer-service", "stop_grace_periods", "30s"),  # a misspelt key
        ("fer-service", "restart", 5),  # a wrong type
        ("mosquitto", "healthcheck", {"test": ["CMD", "true"], "start_intervall": "1s"}),  # nested
    ],
)
def test_schema_refuses_what_compose_would_refuse(service, key, value):
    # A control: the same validator must fail on a broken copy, or a pass above proves nothing.
    document = copy.deepcopy(compose())
    document["services"][service][key] = value
    assert _errors(document)


def test_docker_compose_accepts_every_profile():
    binary = tool("docker-compose")
    subprocess.run([binary, *PROFILES, "config", "-q"], cwd=REPO, check=True, timeout=120)


def test_docker_compose_accepts_the_example_env_file():
    binary = tool("docker-compose")
    result = subprocess.run(
        [binary, "--env-file", "deploy/env.example", *PROFILES, "config"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "/dev/video0:/dev/video0" in result.stdout


def _env_example() -> dict[str, str]:
    """Every NAME=value in deploy/env.example, commented out or not."""
    text = (REPO / "deploy" / "env.example").read_text()
    return dict(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.M))


def _passed_through() -> list[str]:
    names = []
    for service in compose()["services"].values():
        names += [e for e in service.get("environment", []) if "=" not in e]
    return names


def test_every_variable_is_documented_in_env_example():
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    documented = set(_env_example())
    assert interpolated | set(_passed_through()) <= documented


def test_only_service_settings_use_the_fer_prefix():
    # The service takes every FER_ variable as a setting and refuses unknown ones, so a compose-only
    # knob named FER_* would stop it in any environment that exports it (a systemd EnvironmentFile).
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    assert not {name for name in interpolated if name.startswith("FER_")}


def test_docker_config_loads_with_the_example_settings():
    example = _env_example()
    environ = {name: example[name] for name in _passed_through() if name.startswith("FER_")}
    assert {"FER_API__TOKEN", "FER_MQTT__USERNAME", "FER_MQTT__PASSWORD"} <= set(environ)
    settings = load_settings(DOCKER_CONFIG, environ)
    assert settings.api.token is not None and settings.mqtt.password is not None
    load_settings(DOCKER_CONFIG, {})  # and with nothing set at all


def test_service_wiring_matches_its_config():
    settings = load_settings(DOCKER_CONFIG, {})
    services = compose()["services"]
    service = services["fer-service"]
    mounts = volume_targets(service)

    assert settings.api.host == "0.0.0.0", "a container must listen beyond its own loopback"
    assert [container_port(p) for p in service["ports"]] == [settings.api.port]
    assert settings.mqtt.host in services
    assert settings.mqtt.port in [container_port(p) for p in services[settings.mqtt.host]["ports"]]

    command = image_command(SERVICE_DOCKERFILE)
    config_path = command[command.index("--config") + 1]
    assert mounts[config_path] == "./deploy/config.docker.yaml"

    # The store and the outbox live on named volumes, or a restart would lose them.
    named = set(compose()["volumes"])
    assert mounts[str(settings.model.store)] in named
    assert mounts[str(settings.state_dir)] in named
    assert settings.outbox_path.is_relative_to(settings.state_dir)

    # What the trainer publishes must land in the store the service watches.
    trainer_mounts = volume_targets(services["fer-trainer"])
    assert trainer_mounts[str(settings.model.store)] == mounts[str(settings.model.store)]


def test_stop_grace_period_outlasts_the_outbox_flush():
    settings = load_settings(DOCKER_CONFIG, {})
    grace = duration_s(compose()["services"]["fer-service"]["stop_grace_period"])
    # Docker's default is 10 s; the flush has to fit, with room for the rest of the shutdown.
    assert grace >= settings.mqtt.outbox.flush_timeout_s + 10


def test_profiles_keep_the_default_stack_small():
    services = compose()["services"]
    assert {name for name, s in services.items() if "profiles" not in s} == {"mqtt-auth", "mosquitto", "fer-service"}
    assert services["fer-trainer"]["profiles"] == ["train"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]


def test_long_running_services_restart():
    for name, service in compose()["services"].items():
        # The trainer and the broker's one-shot setup are jobs, not daemons.
        expected = "no" if name in {"fer-trainer", "mqtt-auth"} else "unless-stopped"
        assert service.get("restart") == expected, name


def test_service_container_is_locked_down():
    # Frames live in memory only: the one writable scratch space is RAM, and the volumes hold labels and models.
    service = compose()["services"]["fer-service"]
    assert service["read_only"] is True
    assert service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert "privileged" not in service and "cap_add" not in service


def test_broker_container_is_locked_down():
    # The broker faces the LAN (TLS) and, on a central broker, every gateway: it runs as the image's
    # mosquitto user (the uid mqtt-auth gives its password file and key), with nothing to escalate to.
    broker = compose()["services"]["mosquitto"]
    script = (REPO / "deploy" / "mosquitto" / "init" / "mqtt-auth.sh").read_text()
    assert f"BROKER_UID=${{BROKER_UID:-{broker['user'].split(':')[0]}}}" in script
    assert broker["read_only"] is True
    assert broker["cap_drop"] == ["ALL"] and "cap_add" not in broker
    assert "no-new-privileges:true" in broker["security_opt"]
    # What it writes goes to its data volume; its log goes to stdout.
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert "persistence_location /mosquitto/data/" in conf and "log_dest stdout" in conf
    assert "mosquitto-data:/mosquitto/data" in broker["volumes"]


def test_every_fer_setting_reaches_the_service_through_its_env_file(tmp_path: Path):
    """docker-compose renders the env_file into the container's environment: any settings key set
    there reaches the service, and the shipped file sets nothing the service would refuse."""
    assert compose()["services"]["fer-service"]["env_file"] == ["./deploy/service.env"]
    shipped = [line for line in (REPO / "deploy" / "service.env").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert shipped == []  # a template: a gateway's own values never come tracked
    binary = tool("docker-compose")
    (tmp_path / "deploy").mkdir()
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.read_text())
    # docker-compose checks that every build context exists.
    shutil.copytree(REPO / "deploy" / "mosquitto" / "init", tmp_path / "deploy" / "mosquitto" / "init")
    env = {"FER_DETECTOR__KIND": "haar", "FER_API__DETECT_MAX_SIDE": "480", "FER_CAMERAS__0__FPS": "10"}
    (tmp_path / "deploy" / "service.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    out = subprocess.run([binary, "-f", str(tmp_path / "docker-compose.yml"), "config"], cwd=tmp_path,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    rendered = yaml.safe_load(out)["services"]["fer-service"]["environment"]
    assert {k: rendered[k] for k in env} == env
    # Pass-through names unset in this shell render as null: Docker leaves them out of the container.
    environ = {k: str(v) for k, v in rendered.items() if k.startswith("FER_") and v is not None}
    settings = load_settings(DOCKER_CONFIG, environ)
    assert settings.detector.kind == "haar" and settings.api.detect_max_side == 480
