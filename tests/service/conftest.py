"""Fixtures for the service tests: copies of the seed store, a real broker, settings builders."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from harness.broker import HAVE_BROKER, Mosquitto
from harness.service import ServiceProcess
from harness.store import copy_store
from service.config import Settings
from service.config.loader import _deep_merge

# Mosquitto when installed; only without it an amqtt broker (dev extra). Neither: the broker tests skip.
# Tests that need mosquitto itself (password files, TLS) skip on HAVE_MOSQUITTO instead.
NO_BROKER = "neither mosquitto nor amqtt is installed"
needs_broker = pytest.mark.skipif(not HAVE_BROKER, reason=NO_BROKER)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No sandbox (root in a container), nothing fetched in the background.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def local_client(app: FastAPI) -> TestClient:
    """Starlette's test client, as a browser on the gateway reaches the service: its default Host,
    `testserver`, is not a name a service on loopback answers to (api.allowed_hosts)."""
    return TestClient(app, base_url="http://localhost")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright (the browser tests skip where either is missing)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return copy_store(tmp_path / "store")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if not HAVE_BROKER:
        pytest.skip(NO_BROKER)
    b = Mosquitto(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    """Service processes a test starts, killed after it whatever happened: none may outlive its test."""
    running: list[ServiceProcess] = []
    yield running
    for s in running:
        s.kill()


@pytest.fixture
def make_settings(tmp_path: Path, store_root: Path) -> Callable[..., Settings]:
    """Settings for a test: no broker and no cameras unless given, short intervals, a private store."""

    def build(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "state_dir": str(tmp_path / "state"),
            "log_level": "INFO",
            "api": {"token": "test-token", "max_upload_bytes": 4 * 1024 * 1024},
            "mqtt": {"enabled": False, "reconnect_min_s": 1, "reconnect_max_s": 2},
            "model": {"store": str(store_root), "watch_interval_s": 0.1},
        }
        return Settings.model_validate(_deep_merge(base, overrides))

    return build
