"""The service image's install, repeated in a clean venv: `.[service]` alone must run the service, with no torch.

Slow (a real install from PyPI, a minute on a cold cache), so it runs where FEREDGE_SLOW_TESTS=1, as .ci/run sets.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.deploy.helpers import DOCKER_CONFIG, REPO, SERVICE_DOCKERFILE, copy_sources, parse_dockerfile

SLOW_ENV = "FEREDGE_SLOW_TESTS"
pytestmark = pytest.mark.skipif(
    os.environ.get(SLOW_ENV) != "1", reason=f"installs from PyPI; set {SLOW_ENV}=1 to run it (.ci/run does)"
)

# Imports every module the installed packages hold, so that a torch import anywhere in them shows.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import model_store, service
names = []
for package in (service, model_store):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules), "service": service.__file__}))
"""


def _build_stage_context(dest: Path) -> str:
    """Lay out what the build stage COPYs, as it does; return the stage's `pip install` command line."""
    build = parse_dockerfile(SERVICE_DOCKERFILE)[0]
    for ins in build.all("COPY"):
        sources, target = copy_sources(ins)
        for source in sources:
            src, dst = REPO / source, dest / target
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
            elif target.endswith("/"):
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst / src.name)
            else:
                shutil.copy2(src, dst)
    (install,) = [ins.args for ins in build.all("RUN") if "pip install" in ins.args]
    return install


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # No FER_ setting or Python path from this session may leak into the clean environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FER_", "PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{shlex.join(argv)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def test_service_requirements_install_into_a_clean_venv_without_torch(tmp_path: Path):
    context = tmp_path / "src"
    context.mkdir()
    install = shlex.split(_build_stage_context(context))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    # The image's own command, with its venv's pip swapped for this one.
    assert install[0] == "/opt/venv/bin/pip", install
    _run([python, "-m", "pip", *install[1:]], cwd=context)

    installed = json.loads(_run([python, "-m", "pip", "list", "--format=json"], cwd=tmp_path).stdout)
    names = {p["name"].lower() for p in installed}
    assert "torch" not in names and not any(n.startswith("nvidia-") for n in names)
    _run([python, "-m", "pip", "check"], cwd=tmp_path)

    # Outside the repository, so that only the installed copy can be imported.
    found = json.loads(_run([python, "-c", IMPORT_ALL], cwd=tmp_path).stdout)
    assert Path(found["service"]).is_relative_to(env_dir)
    assert "service.__main__" in found["modules"]
    # The dashboard's page is package data, so every file of it must be in the installed copy too.
    static = Path(found["service"]).parent / "dashboard" / "static"
    assert {p.name for p in static.iterdir()} >= {p.name for p in (REPO / "service/dashboard/static").iterdir()}
    assert not [m for m in found["loaded"] if m.split(".")[0] in {"torch", "trainer"}]

    # The image's config loads in the image's environment.
    _run([python, "-m", "service", "check", "--config", str(DOCKER_CONFIG)], cwd=tmp_path)
