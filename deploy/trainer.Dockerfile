# syntax=docker/dockerfile:1
# The trainer on the CPU: fits, exports and publishes a new version into the model store volume
# that fer-service watches. Build from the repository root (docker-compose.yml does).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
ARG FER_UID=10001
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN groupadd --system --gid "${FER_UID}" fer \
    && useradd --system --uid "${FER_UID}" --gid fer --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin fer \
    && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/fer-edge
COPY pyproject.toml ./
COPY model_store/ model_store/
COPY trainer/ trainer/
# PyPI's x86_64 torch wheel pulls in CUDA, gigabytes a gateway never uses. The CPU index serves the
# pinned release as <version>+cpu, which satisfies the pin in pyproject.toml and sorts above PyPI's.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[trainer]"
# Same uid as the service image, and the same seed: whichever container first mounts the empty
# volume fills it, and both can write what the other published.
COPY --chown=fer:fer model_store/seed /var/lib/fer/models
RUN install -d -o fer -g fer /var/lib/fer/runs
# The root filesystem is read-only in compose; matplotlib needs a writable cache for its fonts.
ENV MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER fer
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["fit", "--data", "/data", "--config", "trainer/configs/fer2013.yaml", \
     "--store", "/var/lib/fer/models", "--out", "/var/lib/fer/runs/latest"]
