"""Promotions that cannot brick a restart: the service and the CLI load a version before they move an
alias, and a service whose alias names a bad version at start-up serves the alias's previous good one."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from harness.faults import FAULTS, UNSERVABLE_BUT_VERIFIED
from harness.service import live_server
from harness.store import publish_copy
from model_store import ModelStore
from service.app import create_app
from service.config import Settings
from tests.service.conftest import local_client

TOKEN = {"Authorization": "Bearer test-token"}


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exported")


@pytest.mark.parametrize("fault", UNSERVABLE_BUT_VERIFIED)
def test_a_refused_promotion_leaves_the_alias_and_a_restart_works(
    fault: str, make_settings: Callable[..., Settings], store_root: Path
) -> None:
    pytest.importorskip("onnx")
    store = ModelStore(store_root)
    good = store.resolve("ean", "stable")
    bad = FAULTS[fault](store)
    before = store.aliases("ean")
    settings = make_settings(model={"watch_interval_s": 0})
    with local_client(create_app(settings)) as client:
        for alias in ("stable", "candidate"):
            resp = client.post("/models/promote", json={"version": bad, "alias": alias}, headers=TOKEN)
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["code"] == "promote_failed"
        assert store.aliases("ean") == before
        assert client.get("/models").json()["served"]["version"] == good
    with local_client(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200


def test_a_rollback_to_an_unservable_version_is_refused(
    make_settings: Callable[..., Settings], store_root: Path
) -> None:
    store = ModelStore(store_root)
    good = store.resolve("ean", "stable")
    bad = FAULTS["garbage_with_matching_hash"](store)
    store.set_alias("ean", "stable", bad)
    store.set_alias("ean", "stable", good)
    with local_client(create_app(make_settings(model={"watch_interval_s": 0}))) as client:
        resp = client.post("/models/rollback", json={"alias": "stable"}, headers=TOKEN)
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "rollback_failed", resp.text
        assert store.resolve("ean", "stable") == good
        v2 = publish_copy(store)
        assert client.post("/models/promote", json={"version": v2}, headers=TOKEN).status_code == 200
        resp = client.post("/models/rollback", json={"alias": "stable"}, headers=TOKEN)
        assert resp.status_code == 200 and resp.json()["version"] == good, resp.text
        assert resp.json()["reload"]["result"] == "swapped"
        assert client.get("/models").json()["served"]["version"] == good


def cli(store_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_store", "--root", str(store_root), *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_cli_promote_verifies_and_loads_before_moving_the_alias(store_root: Path) -> None:
    pytest.importorskip("onnx")
    store = ModelStore(store_root)
    good = store.resolve("ean", "stable")
    for fault in ("flipped_byte", "garbage_with_matching_hash", "five_labels_for_seven_outputs"):
        bad = FAULTS[fault](store)
        proc = cli(store_root, "promote", "ean", str(bad))
        assert proc.returncode == 1, (fault, proc.stdout, proc.stderr)
        assert f"v{bad}" in proc.stderr and "Traceback" not in proc.stderr
        assert store.resolve("ean", "stable") == good
    v2 = publish_copy(store)
    proc = cli(store_root, "promote", "ean", str(v2))
    assert proc.returncode == 0, proc.stderr
    assert store.resolve("ean", "stable") == v2


def test_start_up_falls_back_to_the_alias_previous_good_version(
    make_settings: Callable[..., Settings], store_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(store_root)
    good = store.resolve("ean", "stable")
    flipped = FAULTS["flipped_byte"](store)
    garbage = FAULTS["garbage_with_matching_hash"](store)
    # As the old CLI or a hand edit would leave it: two bad versions in a row on top of a good one.
    store.set_alias("ean", "stable", flipped)
    store.set_alias("ean", "stable", garbage)
    with caplog.at_level(logging.ERROR), local_client(create_app(make_settings())) as client:
        assert client.get("/readyz").status_code == 200
        models = client.get("/models").json()
        assert models["served"]["version"] == good and models["aliases"]["stable"] == garbage
        assert metric(client, 'fer_model_reloads_total{result="fallback"}') == 1
        time.sleep(0.5)  # the watcher polls the alias meanwhile: the bad version is not counted again
        assert metric(client, 'fer_model_reloads_total{result="failed"}') == 0
    fallback = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert fallback and f"v{garbage}" in fallback[0] and f"serving v{good}" in fallback[0]


def test_store_work_stays_off_the_event_loop(make_settings: Callable[..., Settings], store_root: Path) -> None:
    """A trainer publishing holds the store's file lock; /healthz must not wait for it."""
    store = ModelStore(store_root)
    v2 = publish_copy(store)
    held = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with store._locked("ean"):
            held.set()
            release.wait(10)

    with live_server(create_app(make_settings(model={"watch_interval_s": 0}))) as url:
        locker = threading.Thread(target=hold_lock)
        locker.start()
        held.wait(5)
        promote = threading.Thread(target=lambda: httpx.post(f"{url}/models/promote", json={"version": v2},
                                                             headers=TOKEN, timeout=30))  # fmt: skip
        promote.start()
        time.sleep(0.3)
        try:
            started = time.monotonic()
            with contextlib.suppress(httpx.TimeoutException):
                httpx.get(f"{url}/healthz", timeout=2)
            assert time.monotonic() - started < 1.5
        finally:
            release.set()
            locker.join(10)
            promote.join(30)
        assert httpx.get(f"{url}/models").json()["served"]["version"] == v2
