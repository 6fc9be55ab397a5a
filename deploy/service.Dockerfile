# syntax=docker/dockerfile:1
# The edge service: a slim Python with onnxruntime and no torch, run as an unprivileged user.
# Build from the repository root (docker-compose.yml does): docker build -f deploy/service.Dockerfile .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# The service imports model_store but never trainer/, whose torch would add gigabytes. README.md is
# left out on purpose: it is only package metadata, and a docs edit should not rebuild this layer.
COPY pyproject.toml ./
COPY model_store/ model_store/
COPY service/ service/
# The same command CI runs in a clean venv (tests/deploy/test_deploy_image_deps.py).
RUN /opt/venv/bin/pip install ".[service]"

FROM ${PYTHON_IMAGE}
ARG FER_UID=10001
RUN groupadd --system --gid "${FER_UID}" fer \
    && useradd --system --uid "${FER_UID}" --gid fer --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin fer
COPY --from=build /opt/venv /opt/venv
# Docker fills an empty named volume from the image on first mount, so the first start serves the
# shipped model; the volume then keeps what the trainer publishes and what admins promote.
COPY --chown=fer:fer model_store/seed /var/lib/fer/models
RUN install -d -o fer -g fer /var/lib/fer/state
# A default so that the image runs alone; compose mounts the same file over it.
COPY deploy/config.docker.yaml /etc/fer-edge/config.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER fer
WORKDIR /var/lib/fer
EXPOSE 8000
# The slim image has no curl: the interpreter that is already there does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "service"]
CMD ["--config", "/etc/fer-edge/config.yaml"]
