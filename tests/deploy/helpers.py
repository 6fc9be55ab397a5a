"""What the deployment tests share: the repository's deploy files, parsed, and the tools they run."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICE_DOCKERFILE = DEPLOY / "service.Dockerfile"
TRAINER_DOCKERFILE = DEPLOY / "trainer.Dockerfile"
DOCKER_CONFIG = DEPLOY / "config.docker.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "fer-edge.json"
# What Grafana substitutes before a dashboard query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$camera": ".*"}
# Set by .ci/run once it has installed the tools: from then on a missing tool is a failure, not a skip.
REQUIRE_TOOLS_ENV = "FEREDGE_REQUIRE_DEPLOY_TOOLS"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL as Prometheus receives it) for every target of the Grafana dashboard."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def tool(name: str, env_var: str | None = None) -> str:
    """The path of an external program; a skip where it is not installed, unless CI installed it."""
    # Daemons such as mosquitto live in sbin, which a non-login PATH may lack.
    path = (os.environ.get(env_var) if env_var else None) or shutil.which(name) or shutil.which(name, path=SBIN)
    if path:
        return path
    message = f"{name} is not installed (.ci/run installs it from Debian's packages)"
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)


def duration_s(text: str | int | float) -> float:
    """A Compose or systemd duration such as 30s, 1m30s or 500ms, in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def container_port(mapping: str) -> int:
    """The container side of a short-syntax port mapping such as "${X:-8000}:8000" or "127.0.0.1:9090:9090"."""
    return int(mapping.rsplit(":", 1)[1].split("/")[0])


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, from a service's short-syntax volume entries."""
    out = {}
    for entry in service.get("volumes", []):
        source, target = re.split(r":(?![^{]*\})", entry)[:2]  # not at the colon of ${VAR:-default}
        out[target] = source
    return out


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str]:
        """The JSON-array (exec) form of CMD, ENTRYPOINT or HEALTHCHECK CMD; a failure for shell form."""
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.args
        return value


@dataclass
class Stage:
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _take_flags(args: str) -> tuple[dict[str, str], str]:
    flags = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        args = args.lstrip()
    return flags, args


def parse_dockerfile(path: Path) -> list[Stage]:
    """Instructions by build stage, with continuation lines joined and comment lines dropped, as Docker reads them."""
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text, pending = pending + stripped, ""
        keyword, _, args = text.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        flags: dict[str, str] = {}
        if keyword in {"COPY", "ADD", "HEALTHCHECK"}:
            flags, args = _take_flags(args)
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
            continue
        if not stages:
            assert keyword == "ARG", f"{path.name}:{number}: {keyword} before FROM"
            continue  # a global build argument, only visible to FROM lines
        stages[-1].instructions.append(Instruction(keyword, args, start, flags))
    return stages


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """The sources and the destination of a COPY instruction, in either form."""
    parts = json.loads(instruction.args) if instruction.args.startswith("[") else instruction.args.split()
    return parts[:-1], parts[-1]


def image_command(path: Path) -> list[str]:
    """ENTRYPOINT followed by CMD of the final stage: what `docker run IMAGE` executes."""
    final = parse_dockerfile(path)[-1]
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    return (entrypoint.exec_form() if entrypoint else []) + (cmd.exec_form() if cmd else [])


def healthcheck_command(path: Path = SERVICE_DOCKERFILE) -> list[str]:
    """The exec-form command of the final stage's HEALTHCHECK."""
    healthcheck = parse_dockerfile(path)[-1].last("HEALTHCHECK")
    assert healthcheck is not None and healthcheck.args.startswith("CMD "), "no HEALTHCHECK CMD [...]"
    return Instruction("CMD", healthcheck.args.removeprefix("CMD "), healthcheck.line).exec_form()
