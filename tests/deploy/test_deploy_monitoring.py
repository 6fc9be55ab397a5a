"""Prometheus and Grafana: promtool accepts the config and every dashboard query, the pieces find each other, and a
real Prometheus with the shipped scrape job gets in to the service with the token mqtt-auth made.

That the queries name series the service really exports is checked on a live scrape in test_deploy_smoke.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness.machine import free_port, terminate
from harness.service import ServiceProcess
from harness.store import copy_store
from service.config import load_settings
from tests.deploy.conftest import MqttAuth
from tests.deploy.helpers import (
    DASHBOARD,
    DEPLOY,
    DOCKER_CONFIG,
    compose,
    container_port,
    dashboard_queries,
    load_yaml,
    tool,
    volume_targets,
)

PROVISIONING = DEPLOY / "grafana" / "provisioning"
PROMETHEUS_CONFIG = DEPLOY / "prometheus.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool", "PROMTOOL"), *args], capture_output=True, text=True, timeout=60)


def _prometheus() -> str:
    """The Prometheus server: .ci/run extracts Debian's prometheus package for promtool, and the server is beside it."""
    promtool = os.environ.get("PROMTOOL")
    if promtool and (Path(promtool).parent / "prometheus").is_file():
        return str(Path(promtool).parent / "prometheus")
    return tool("prometheus", "PROMETHEUS")


def _on_volume(service: str, path: str) -> tuple[str, str]:
    """(the volume, the path inside it) of a path in ``service``'s container."""
    for target, source in volume_targets(compose()["services"][service]).items():
        if path.startswith(target.rstrip("/") + "/"):
            return source, path[len(target.rstrip("/")) + 1 :]
    raise AssertionError(f"{path} is on no volume of {service}")


def _job() -> dict[str, Any]:
    (job,) = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    return job


def _config_here(path: Path, token_file: Path, target: str | None = None, **global_: str) -> Path:
    """The shipped config written to ``path``, with what Docker would provide found here instead: the token in
    its volume, and optionally the service's address."""
    config = load_yaml(PROMETHEUS_CONFIG)
    (job,) = config["scrape_configs"]
    job["authorization"]["credentials_file"] = str(token_file)
    if target is not None:
        job["static_configs"] = [{"targets": [target]}]
    config["global"].update(global_)
    path.write_text(yaml.safe_dump(config))
    return path


def test_promtool_accepts_the_prometheus_config(tmp_path: Path):
    # promtool insists that credentials_file exists: the shipped path is inside the container, so here it is a
    # token file where the volume would be; nothing else of the config changes.
    token = tmp_path / "api-token"
    token.write_text("0" * 48 + "\n")
    result = _promtool("check", "config", str(_config_here(tmp_path / "prometheus.yml", token)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path):
    # Recording rules are the one offline way to have promtool parse PromQL.
    rules = [{"record": f"fer_dashboard:query{i}", "expr": expr} for i, (_, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_latency_quantiles_and_event_rates():
    exprs = [expr for _, expr in dashboard_queries()]
    wanted = [
        ("0.5", "fer_frame_latency_seconds"), ("0.95", "fer_frame_latency_seconds"), ("0.95", "fer_stage_seconds"),
        ("0.5", "fer_infer_seconds"), ("0.95", "fer_infer_seconds"),
    ]  # fmt: skip
    for quantile, histogram in wanted:
        assert any(f"histogram_quantile({quantile}," in e and f"{histogram}_bucket" in e for e in exprs)
    assert any("rate(fer_events_total" in e for e in exprs)


def test_grafana_reaches_prometheus_and_finds_the_dashboard():
    services = compose()["services"]
    datasource = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"][0]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", datasource["url"]).groups()
    assert int(port) in [container_port(p) for p in services[host]["ports"]]

    dashboard = json.loads(DASHBOARD.read_text())
    used_uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert used_uids == {datasource["uid"]}

    provider = load_yaml(PROVISIONING / "dashboards" / "fer-edge.yml")["providers"][0]
    assert volume_targets(services["grafana"])[provider["options"]["path"]] == "./deploy/grafana/dashboards"


def test_prometheus_scrapes_the_service_port():
    config = load_yaml(PROMETHEUS_CONFIG)
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    settings = load_settings(DOCKER_CONFIG, {})
    assert targets == [f"fer-service:{settings.api.port}"]
    assert "fer-service" in compose()["services"]


def test_prometheus_sends_the_token_the_service_reads():
    """Both read mqtt-auth's api-token from its volume: the service as api.token_file, Prometheus as the
    credentials_file of its scrape job, through a read-only mount, once mqtt-auth has made it."""
    services = compose()["services"]
    prometheus = services["prometheus"]
    authorization = _job()["authorization"]
    assert authorization["type"] == "Bearer" and set(authorization) == {"type", "credentials_file"}
    settings = load_settings(DOCKER_CONFIG, {})
    assert settings.api.token is None and settings.api.token_file is not None
    assert _on_volume("prometheus", authorization["credentials_file"]) == ("mqtt-auth", "api-token")
    assert _on_volume("fer-service", str(settings.api.token_file)) == ("mqtt-auth", "api-token")
    assert next(v for v in prometheus["volumes"] if v.startswith("mqtt-auth:")).endswith(":ro")
    assert prometheus["depends_on"]["mqtt-auth"] == {"condition": "service_completed_successfully"}
    # The token's group is the one the prom/prometheus image runs as (nobody, 65534), which compose must not change.
    assert "PROMETHEUS_GID=65534" in services["mqtt-auth"]["environment"]
    assert "user" not in prometheus and "group_add" not in prometheus


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


def _targets(base: str) -> list[dict[str, Any]]:
    try:
        return httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    except (httpx.HTTPError, ValueError):
        return []


def test_prometheus_scrapes_the_service_with_the_token_mqtt_auth_made(tmp_path: Path):
    """The real Prometheus with the shipped scrape job, against the service as it runs in its container (on
    0.0.0.0, credentials required, the token from api.token_file), both reading the same file of the volume
    that the shipped mqtt-auth.sh made. Only the addresses and the scrape interval are the test's."""
    prometheus = _prometheus()
    auth = MqttAuth(tmp_path / "volume")
    auth.run()
    token_file = auth.dir / _on_volume("prometheus", _job()["authorization"]["credentials_file"])[1]
    settings = load_settings(DOCKER_CONFIG, {})
    assert settings.api.host == "0.0.0.0"
    store = copy_store(tmp_path / "models")
    port = free_port()
    env = {
        "FER_API__PORT": str(port),
        "FER_API__TOKEN_FILE": str(auth.dir / _on_volume("fer-service", str(settings.api.token_file))[1]),
        "FER_MQTT__ENABLED": "false",
        "FER_STATE_DIR": str(tmp_path / "state"),
        "FER_MODEL__STORE": str(store),
        "FER_CAMERAS__0__SOURCE": str(tmp_path / "no-camera.mp4"),
    }
    base = f"http://127.0.0.1:{port}"
    prometheus_base = f"http://127.0.0.1:{free_port()}"
    config = _config_here(tmp_path / "prometheus.yml", token_file, f"127.0.0.1:{port}", scrape_interval="1s")
    logs = tmp_path / "service.log", tmp_path / "prometheus.log"
    service = ServiceProcess(DOCKER_CONFIG, port, logs[0], env).launch()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        assert service.proc is not None
        deadline = time.monotonic() + 120
        while _status(f"{base}/healthz") != 200:  # /readyz, like every route but this one, wants the token
            assert service.proc.poll() is None and time.monotonic() < deadline, logs[0].read_text()[-4000:]
            time.sleep(0.2)
        # Without the token the service refuses /metrics: what follows is the token's doing.
        assert _status(f"{base}/metrics") == 401
        with logs[1].open("wb") as out:
            processes.append(subprocess.Popen([prometheus, f"--config.file={config}",
                                               f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                               f"--web.listen-address={prometheus_base.removeprefix('http://')}"],
                                              stdout=out, stderr=subprocess.STDOUT))  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            targets = [t for t in _targets(prometheus_base) if t["scrapePool"] == _job()["job_name"]]
            if targets and targets[0]["health"] == "up":
                break
            assert processes[0].poll() is None, logs[1].read_text()[-4000:]
            assert time.monotonic() < deadline, f"never scraped: {targets}\n{logs[1].read_text()[-4000:]}"
            time.sleep(0.5)
        assert targets[0]["lastError"] == ""
    finally:
        service.stop()
        for process in processes:
            terminate(process, 30)
    assert token_file.read_text().strip() not in logs[0].read_text() + logs[1].read_text()

