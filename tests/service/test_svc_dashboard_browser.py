"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against the real service
(`python -m service`, the demo camera) and a real mosquitto: camera and event rows appear, the switch
works, the page shows a broker restart and a service restart and recovers, and no console error.

The screenshot is saved under $TEST_ARTIFACTS (default: artifacts/ at the repository root).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.service.support import HAVE_MOSQUITTO, Mosquitto, Subscriber, free_port
from tests.service.test_svc_e2e import ROOT, Service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags of the machine notes: no sandbox (root in a container), nothing fetched in the background.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "artifacts"))

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # the dev extra has it; CI requires it
    sync_playwright = None  # type: ignore[assignment]

_missing = [what for what, ok in [("chromium", CHROMIUM), ("playwright", sync_playwright), ("mosquitto",
            HAVE_MOSQUITTO)] if not ok]  # fmt: skip
if _missing and os.environ.get("FEREDGE_REQUIRE_BROWSER"):
    raise RuntimeError(f"FEREDGE_REQUIRE_BROWSER is set but {', '.join(_missing)} is missing")
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"needs {', '.join(_missing)} (.ci/run installs them)")

TOKEN = "browser-test-token"


def write_config(tmp_path: Path, mqtt_port: int, http_port: int) -> Path:
    config = {
        "state_dir": str(tmp_path / "state"),
        "api": {"port": http_port, "token": TOKEN},
        "mqtt": {"port": mqtt_port, "reconnect_min_s": 1, "reconnect_max_s": 1, "client_id": "fer-browser"},
        "model": {"store": str(ROOT / "model_store" / "seed"), "watch_interval_s": 0},
        "tracking": {"min_dwell_s": 0.5},
        "cameras": [{"id": "demo", "name": "Demo clip", "source": "demo", "loop": True, "fps": 10}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Console:
    """Every console error and uncaught exception of the page; `allow` names the tolerated ones."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.allow: tuple[str, ...] = ()
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and not any(a in msg.text for a in self.allow):
            self.errors.append(msg.text)


@pytest.fixture
def browser_page() -> Iterator[Page]:
    assert sync_playwright is not None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            yield page
        finally:
            browser.close()


def test_dashboard_in_chromium(tmp_path: Path, browser_page: Page) -> None:
    page = browser_page
    console = Console(page)
    broker = Mosquitto(tmp_path / "broker").start()
    http_port = free_port()
    config = write_config(tmp_path, broker.port, http_port)
    svc = Service(config, http_port, tmp_path / "service.log")
    sub = Subscriber(broker.port, ("fer/demo/analysis/state",))
    try:
        page.goto(f"http://127.0.0.1:{http_port}/")
        row = page.locator('#cameras tbody tr[data-camera="demo"]')
        expect(row).to_be_visible(timeout=30_000)
        expect(row.locator(".badge").first).to_have_text("online", timeout=30_000)
        # The demo face smiles within seconds of the clip's start.
        change = page.locator("#events tbody tr.event", has_text="expression_change").first
        expect(change).to_be_visible(timeout=60_000)
        expect(change).to_contain_text("demo")
        expect(page.locator("#broker-state")).to_have_text("broker: connected")
        expect(page.locator("#service-state")).to_have_text("service: connected")
        expect(page.locator("#model")).to_contain_text("accuracy")
        expect(page.locator('#latency tr[data-camera="demo"][data-stage="total"]')).to_be_visible(timeout=10_000)
        expect(row).not_to_contain_text("no face", timeout=30_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # The privacy switch, with the admin token; the broker's retained state echoes it.
        page.fill("#token", TOKEN)
        row.locator("button.switch").click()
        expect(row.locator("button.switch")).to_have_attribute("data-state", "OFF", timeout=15_000)
        expect(row).to_contain_text("analysis_off", timeout=15_000)
        sub.wait_for(lambda ms: ms and ms[-1].json()["state"] == "OFF", what="OFF on the broker")
        row.locator("button.switch").click()
        expect(row.locator("button.switch")).to_have_attribute("data-state", "ON", timeout=15_000)
        expect(row.locator(".badge").first).to_have_text("online", timeout=30_000)

        # A broker restart: the page says so, then recovers by itself.
        broker.kill()
        expect(page.locator("#broker-state")).to_have_text("broker: disconnected", timeout=15_000)
        broker = Mosquitto(tmp_path / "broker", broker.port).start()
        expect(page.locator("#broker-state")).to_have_text("broker: connected", timeout=30_000)
        expect(row.locator(".badge").first).to_have_text("online", timeout=30_000)

        # A service restart: the browser sees refused connections meanwhile, and only those are allowed.
        console.allow = ("net::ERR_CONNECTION_REFUSED", "net::ERR_EMPTY_RESPONSE", "Failed to load resource")
        assert svc.terminate() == 0
        expect(page.locator("#service-state")).to_have_text("service: disconnected", timeout=15_000)
        svc = Service(config, http_port, tmp_path / "service.log")
        expect(page.locator("#service-state")).to_have_text("service: connected", timeout=30_000)
        expect(page.locator("#broker-state")).to_have_text("broker: connected", timeout=30_000)
        expect(row.locator(".badge").first).to_have_text("online", timeout=30_000)
        console.allow = ()
        page.wait_for_timeout(2500)  # a couple of polls and stream messages after the recovery
        page.screenshot(path=str(ARTIFACTS / "dashboard-after-restarts.png"), full_page=True)
        assert console.errors == [], console.errors
    finally:
        sub.close()
        svc.kill()
        broker.kill()
