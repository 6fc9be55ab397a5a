"""The two Dockerfiles: what they copy exists and reaches the build, and what they run is the project's code."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.machine import free_port
from service.config import load_settings
from tests.deploy.helpers import (
    DOCKER_CONFIG,
    REPO,
    SERVICE_DOCKERFILE,
    TRAINER_DOCKERFILE,
    Instruction,
    compose,
    copy_sources,
    healthcheck_command,
    image_command,
    parse_dockerfile,
    tool,
    volume_targets,
)

DOCKERFILES = [SERVICE_DOCKERFILE, TRAINER_DOCKERFILE]


def _local_copies(dockerfile: Path) -> list[tuple[Instruction, list[str], str]]:
    """COPY instructions that read the build context (not another stage), with sources and destination."""
    return [
        (ins, *copy_sources(ins))
        for stage in parse_dockerfile(dockerfile)
        for ins in stage.all("COPY")
        if "from" not in ins.flags
    ]


def _copied_to(dockerfile: Path) -> dict[str, list[str]]:
    return {dest.rstrip("/"): sources for _, sources, dest in _local_copies(dockerfile)}


# docker-py's own context builder: the code docker-compose runs to decide what a build receives.
_CONTEXT_SCRIPT = """
import json, os, sys
from docker.utils.build import exclude_paths
root, dockerfile = sys.argv[1], sys.argv[2]
patterns = []
if os.path.exists(os.path.join(root, ".dockerignore")):
    with open(os.path.join(root, ".dockerignore")) as f:
        # as docker/api/build.py reads the file
        patterns = [p for p in (line.strip() for line in f.read().splitlines()) if p and p[0] != "#"]
print(json.dumps(sorted(exclude_paths(root, patterns, dockerfile))))
"""


def _build_context(root: Path, dockerfile: str) -> set[str]:
    compose_bin = Path(tool("docker-compose"))
    shebang = compose_bin.read_text(errors="replace").splitlines()[0]
    assert shebang.startswith("#!"), f"{compose_bin} is not a Python script"
    interpreter = shebang[2:].split()[0]
    result = subprocess.run(
        [interpreter, "-c", _CONTEXT_SCRIPT, str(root), dockerfile],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists(dockerfile):
    copies = _local_copies(dockerfile)
    assert copies
    for ins, sources, _ in copies:
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}:{ins.line}: COPY source {source} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_reaches_the_build_context(dockerfile):
    # .dockerignore is an allow-list: a new COPY source not added there fails only at `docker build`.
    context = _build_context(REPO, str(dockerfile.relative_to(REPO)))
    for ins, sources, _ in _local_copies(dockerfile):
        for source in sources:
            path = source.rstrip("/")
            assert path in context, f"{dockerfile.name}:{ins.line}: {source} is left out by .dockerignore"
            if (REPO / path).is_dir():
                assert any(f.startswith(path + "/") for f in context), f"{source} reaches the build empty"


def test_build_context_leaves_out_secrets_and_local_state(tmp_path):
    (tmp_path / ".dockerignore").write_text((REPO / ".dockerignore").read_text())
    local = [".env", ".venv/bin/python", "data/fer2013/train.npz", "runs/x/model.onnx", ".git/config",
             "deploy/mosquitto/conf.d/passwd", "service/__pycache__/x.pyc",
             "model_store/lineage/ean-teacher/1/checkpoint.pt",
             # What drives the service from outside: never in an image, nor in a wheel built there.
             "harness/__init__.py", "bench/chaos.py", "tests/service/conftest.py"]  # fmt: skip
    kept = ["pyproject.toml", "service/__init__.py", "model_store/seed/ean/aliases.json"]
    for name in local + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    context = _build_context(tmp_path, "deploy/service.Dockerfile")
    assert not [name for name in local if name in context]
    assert set(kept) <= context


def test_service_image_leaves_torch_out():
    copied = {source.rstrip("/") for _, sources, _ in _local_copies(SERVICE_DOCKERFILE) for source in sources}
    assert "trainer" not in copied and "." not in copied
    runs = " ".join(ins.args for stage in parse_dockerfile(SERVICE_DOCKERFILE) for ins in stage.all("RUN"))
    assert '".[service]"' in runs
    assert "torch" not in runs and "trainer" not in runs


def test_images_run_as_the_same_unprivileged_user():
    uids = set()
    for dockerfile in DOCKERFILES:
        final = parse_dockerfile(dockerfile)[-1]
        user = final.last("USER")
        assert user is not None and user.args not in {"root", "0"}, dockerfile.name
        uids |= {ins.args for ins in final.all("ARG") if ins.args.startswith("FER_UID=")}
    # Both containers write into the shared model-store volume.
    assert len(uids) == 1


def test_service_image_command_starts_the_service_module():
    command = image_command(SERVICE_DOCKERFILE)
    assert command[:3] == ["python", "-m", "service"]
    # Exec form: with a shell in between, SIGTERM would not reach the service and the outbox would not be flushed.
    result = subprocess.run(
        [sys.executable, *command[1:3], "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    config_path = command[command.index("--config") + 1]
    assert _copied_to(SERVICE_DOCKERFILE)[config_path] == ["deploy/config.docker.yaml"]


def test_service_image_seeds_the_model_store_volume():
    settings = load_settings(DOCKER_CONFIG, {})
    assert _copied_to(SERVICE_DOCKERFILE)[str(settings.model.store)] == ["model_store/seed"]


def test_trainer_image_command_publishes_into_the_shared_store():
    command = image_command(TRAINER_DOCKERFILE)
    assert command[:4] == ["python", "-m", "trainer", "fit"]
    args = dict(zip(command[4::2], command[5::2], strict=True))
    mounts = volume_targets(compose()["services"]["fer-trainer"])
    assert mounts[args["--store"]] == "models"
    assert args["--data"] in mounts
    copied = _copied_to(TRAINER_DOCKERFILE)
    # A relative --config is read from WORKDIR, where relative COPY destinations land too.
    assert parse_dockerfile(TRAINER_DOCKERFILE)[-1].last("WORKDIR") is not None
    assert args["--config"].split("/")[0] in copied, "the config is not copied under WORKDIR"
    assert (REPO / args["--config"]).is_file()
    assert copied[args["--store"]] == ["model_store/seed"]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def _probe(port: int) -> int:
    """Run the image's HEALTHCHECK command against 127.0.0.1:port and return its exit status."""
    argv = healthcheck_command()
    api_port = load_settings(DOCKER_CONFIG, {}).api.port
    probe_url = f"http://127.0.0.1:{api_port}/healthz"
    assert argv[0] == "python" and any(probe_url in a for a in argv)
    argv = [sys.executable, *(a.replace(probe_url, f"http://127.0.0.1:{port}/healthz") for a in argv[1:])]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_follows_healthz(status, healthy):
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert (_probe(server.server_address[1]) == 0) is healthy
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_fails_when_nothing_listens():
    assert _probe(free_port()) != 0
