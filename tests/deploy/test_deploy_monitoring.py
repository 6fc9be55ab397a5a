"""Prometheus and Grafana: promtool accepts the config and every dashboard query, and the pieces find each other.

That the queries name series the service really exports is checked on a live scrape in test_deploy_smoke.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from service.config import load_settings
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


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool", "PROMTOOL"), *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_prometheus_config():
    result = _promtool("check", "config", str(DEPLOY / "prometheus.yml"))
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
    config = load_yaml(DEPLOY / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    settings = load_settings(DOCKER_CONFIG, {})
    assert targets == [f"fer-service:{settings.api.port}"]
    assert "fer-service" in compose()["services"]
