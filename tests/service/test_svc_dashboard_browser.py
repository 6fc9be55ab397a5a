"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against the real service
(`python -m service`, the demo camera and a camera that cannot be opened) and a real mosquitto: the
page stays open past every server timeout on one stream, draws the timeline (bands, the switch's OFF
shading, an anomaly) and keeps it across a reload, works the switch, shows a broker restart and a
service restart and recovers; no console error and no ERROR in the service's log. At 390 px wide
nothing scrolls sideways and each camera's label and switch are on screen.

The wide screenshot is saved under $TEST_ARTIFACTS (default: artifacts/ at the repository root);
docs/dashboard.png, the README's, is one.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.broker import HAVE_MOSQUITTO, Mosquitto, Subscriber
from harness.service import ServiceProcess
from harness.store import SEED_STORE
from model_store import ModelStore
from tests.service.conftest import CHROMIUM

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))

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
# Past the service's body (30 s), header (10 s) and keep-alive (5 s) timeouts, twice over the longest.
HOLD_S = 65
TIME_RANGE = re.compile(r"\d\d:\d\d:\d\d–(\d\d:\d\d:\d\d|now)")


def service_config(tmp_path: Path, mqtt_port: int) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "api": {"token": TOKEN},
        "mqtt": {"port": mqtt_port, "reconnect_min_s": 1, "reconnect_max_s": 1, "client_id": "fer-browser"},
        "model": {"store": str(SEED_STORE), "watch_interval_s": 0},
        "tracking": {"min_dwell_s": 0.5},
        "cameras": [
            {"id": "demo", "name": "Demo clip", "source": "demo", "loop": True, "fps": 10},
            # Never opens: an offline camera, with its camera_fault anomaly and no latency figures.
            {"id": "hall", "source": str(tmp_path / "no-such-clip.mp4")},
        ],
    }


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


@dataclass
class Stack:
    """The broker and the service the page talks to; a test may restart either."""

    tmp_path: Path
    broker: Mosquitto
    svc: ServiceProcess

    @property
    def url(self) -> str:
        return f"{self.svc.url}/"

    def error_lines(self) -> list[str]:
        return [line for line in self.svc.log.read_text().splitlines() if re.search(r"\bERROR\b", line)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    broker = Mosquitto(tmp_path / "broker").start()
    s = Stack(tmp_path, broker, ServiceProcess.configured(tmp_path, service_config(tmp_path, broker.port)))
    try:
        s.svc.start()
        yield s
    finally:
        s.svc.kill()
        s.broker.kill()


def bands(page: Page, camera: str) -> Any:
    return page.locator(f'#timeline .tl-row[data-camera="{camera}"] rect.band')


def test_dashboard_in_chromium(stack: Stack, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if r.url.endswith("/dashboard/stream") else None)
    sub = Subscriber(stack.broker.port, ("fer/demo/analysis/state",))
    try:
        page.goto(stack.url)
        opened = time.monotonic()
        row = page.locator('#cameras tbody tr[data-camera="demo"]')
        expect(row).to_be_visible(timeout=30_000)
        expect(row.locator(".badge").first).to_have_text("online", timeout=30_000)
        # The demo face smiles within seconds of the clip's start.
        change = page.locator("#events tbody tr.event", has_text="expression_change").first
        expect(change).to_be_visible(timeout=60_000)
        expect(change).to_contain_text("demo")
        expect(page.locator("#broker-state")).to_have_text("broker: connected")
        expect(page.locator("#service-state")).to_have_text("service: connected")
        # A manifest figure taken with flip TTA (v1's) is never shown as served; a served one says so.
        seed = ModelStore(SEED_STORE)
        if seed.manifest("ean", seed.resolve("ean", "stable")).metrics.tta:
            expect(page.locator("#model")).to_contain_text("served: not in the manifest")
            expect(page.locator("#model")).to_contain_text("flip TTA")
        else:
            expect(page.locator("#model")).to_contain_text("served (val, one pass)")
        expect(page.locator('#latency tr[data-camera="demo"][data-stage="total"]')).to_be_visible(timeout=10_000)
        # The camera that never opened: one row that says so, not a row of dashes per stage.
        hall = page.locator('#latency tr[data-camera="hall"]')
        expect(hall).to_have_count(1)
        expect(hall).to_contain_text("no frame analysed yet")
        expect(row).not_to_contain_text("no face", timeout=30_000)

        # The privacy switch, with the admin token; the broker's retained state echoes it.
        page.fill("#token", TOKEN)
        row.locator("button.switch").click()
        expect(row.locator("button.switch")).to_have_attribute("data-state", "OFF", timeout=15_000)
        expect(row).to_contain_text("analysis_off", timeout=15_000)
        sub.wait_for(lambda ms: ms and ms[-1].json()["state"] == "OFF", what="OFF on the broker")
        page.wait_for_timeout(2000)  # an OFF period wide enough to see
        row.locator("button.switch").click()
        expect(row.locator("button.switch")).to_have_attribute("data-state", "ON", timeout=15_000)
        expect(row.locator(".badge").first).to_have_text("online", timeout=30_000)
        expect(row).not_to_contain_text("no face", timeout=30_000)

        # Open past every server timeout, on the one stream it opened: a cut stream would reconnect.
        page.wait_for_timeout(max(0.0, HOLD_S - (time.monotonic() - opened)) * 1000)
        assert len(streams) == 1, f"the stream was opened {len(streams)} times in {HOLD_S} s"
        expect(page.locator("#broker-state")).to_have_text("broker: connected")
        assert console.errors == [], console.errors

        # The timeline: bands of the label, the OFF period shaded, the offline camera's anomaly.
        demo_bands = bands(page, "demo")
        expect(demo_bands.first).to_be_visible()
        assert demo_bands.count() >= 2, "the switch splits the demo's label into two bands at least"
        expect(page.locator('#timeline .tl-row[data-camera="demo"] rect.off')).to_have_count(1)
        fault = page.locator('#timeline .tl-row[data-camera="hall"] g.anomaly[data-event-type="camera_fault"]')
        expect(fault).to_have_count(1)
        label = demo_bands.first.get_attribute("data-label")
        demo_bands.first.hover()
        tip = page.locator("#tip")
        expect(tip).to_be_visible()
        expect(tip).to_contain_text(f"{label} · score 0.")
        assert TIME_RANGE.search(tip.inner_text()), tip.inner_text()
        fault.locator("rect.anomaly-span").hover()
        expect(tip).to_contain_text("camera_fault (open_failed)")
        page.mouse.move(0, 0)
        expect(row).not_to_contain_text("no face", timeout=30_000)  # the README's screenshot shows a label
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # A reload draws the same timeline at once, from the service's history.
        tips = [demo_bands.nth(i).get_attribute("data-tip") for i in range(2)]
        page.reload()
        expect(bands(page, "demo").first).to_be_visible(timeout=10_000)
        assert [bands(page, "demo").nth(i).get_attribute("data-tip") for i in range(2)] == tips
        expect(page.locator('#timeline .tl-row[data-camera="demo"] rect.off')).to_have_count(1)

        # A broker restart: the page says so, then recovers by itself.
        stack.broker.kill()
        expect(page.locator("#broker-state")).to_have_text("broker: disconnected", timeout=15_000)
        stack.broker = Mosquitto(stack.tmp_path / "broker", stack.broker.port).start()
        expect(page.locator("#broker-state")).to_have_text("broker: connected", timeout=30_000)
        expect(row.locator(".badge").first).to_have_text("online", timeout=30_000)

        # A service restart: the browser sees refused connections meanwhile, and only those are allowed.
        console.allow = ("net::ERR_CONNECTION_REFUSED", "net::ERR_EMPTY_RESPONSE", "Failed to load resource")
        assert stack.svc.stop() == 0
        expect(page.locator("#service-state")).to_have_text("service: disconnected", timeout=15_000)
        stack.svc.start()
        expect(page.locator("#service-state")).to_have_text("service: connected", timeout=30_000)
        expect(page.locator("#broker-state")).to_have_text("broker: connected", timeout=30_000)
        expect(row.locator(".badge").first).to_have_text("online", timeout=30_000)
        console.allow = ()
        # The page keeps the timeline it drew; the new service's history starts now.
        assert bands(page, "demo").nth(0).get_attribute("data-tip") == tips[0]
        page.wait_for_timeout(2500)  # a couple of polls and stream messages after the recovery
        page.screenshot(path=str(ARTIFACTS / "dashboard-after-restarts.png"), full_page=True)
        assert console.errors == [], console.errors
    finally:
        sub.close()
    assert stack.svc.stop() == 0
    assert stack.error_lines() == [], stack.error_lines()


def test_dashboard_at_390_px_wide(stack: Stack, browser: Any, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844})
    console = Console(page)
    page.goto(stack.url)
    for camera in ("demo", "hall"):
        expect(page.locator(f'#cameras tbody tr[data-camera="{camera}"] button.switch')).to_be_visible(timeout=30_000)
    expect(page.locator("#events tbody tr.event").first).to_be_visible(timeout=60_000)
    expect(page.locator('#latency tr[data-camera="demo"][data-stage="total"]')).to_be_visible(timeout=10_000)
    expect(bands(page, "demo").first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(tmp_path / "dashboard-390.png"), full_page=True)

    width = page.evaluate("document.documentElement.clientWidth")
    assert width == 390
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    overflowing = page.evaluate(
        "[...document.querySelectorAll('section, table')].filter(e => e.scrollWidth > e.clientWidth)"
        ".map(e => e.id || e.querySelector('h2').textContent)"  # every table has an id, every section an h2
    )
    assert overflowing == [], f"these scroll sideways: {overflowing}"
    for camera in ("demo", "hall"):
        row = page.locator(f'#cameras tbody tr[data-camera="{camera}"]')
        for part in ("td.expression", "button.switch"):
            box = row.locator(part).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (camera, part, box)
            # Whole, not cut to "happ".
            assert row.locator(part).evaluate("e => e.scrollWidth <= e.clientWidth"), (camera, part)
    assert console.errors == [], console.errors
    assert stack.error_lines() == [], stack.error_lines()
