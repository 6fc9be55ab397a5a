"""The page's login in a real browser (Debian's chromium, driven by Playwright) against the service as
users run it, bound to 0.0.0.0 (the browser still goes to 127.0.0.1): the page sends it to the
login, a wrong password is said so, the right one brings it back with an HttpOnly, SameSite=Strict
cookie that scripts cannot read, the privacy switch works with the session, and logging out ends it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness.machine import free_port
from service.api.auth import COOKIE
from tests.service.conftest import CHROMIUM
from tests.service.test_svc_auth import BEARER, PASSWORD, TOKEN, SecuredService
from tests.service.test_svc_dashboard_browser import Console, sync_playwright

if sync_playwright is not None:
    from playwright.sync_api import expect

_missing = [what for what, ok in [("chromium", CHROMIUM), ("playwright", sync_playwright)] if not ok]
if _missing and os.environ.get("FEREDGE_REQUIRE_BROWSER"):
    raise RuntimeError(f"FEREDGE_REQUIRE_BROWSER is set but {', '.join(_missing)} is missing")
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"needs {', '.join(_missing)} (.ci/run installs them)")


@pytest.fixture
def service(tmp_path: Path, store_root: Path) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "api": {"host": "0.0.0.0", "port": port, "token": TOKEN},
        "mqtt": {"enabled": False},
        "model": {"store": str(store_root), "watch_interval_s": 0},
        # Never opens, so it costs nothing; it still has its privacy switch.
        "cameras": [{"id": "hall", "source": str(tmp_path / "no-such-clip.mp4")}],
    }))  # fmt: skip
    log = tmp_path / "service.log"
    svc = SecuredService(config, port, log, {"FER_API__PASSWORD": PASSWORD}).start()
    try:
        yield svc.url
    finally:
        assert svc.stop() == 0
    errors = [line for line in log.read_text().splitlines() if re.search(r"\bERROR\b", line)]
    assert errors == [], errors
    assert PASSWORD not in log.read_text()


def hall_analysis(base: str) -> str:
    cameras = httpx.get(f"{base}/cameras", headers=BEARER, timeout=5).json()["cameras"]
    return {c["id"]: c for c in cameras}["hall"]["analysis"]


def test_login_switch_and_logout_in_chromium(service: str, browser: Any) -> None:
    base = service
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console = Console(page)
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=%2F")
    expect(page.locator("#password")).to_be_focused()

    # The browser reports the 401 of a wrong password as a failed load; that one is expected.
    console.allow = ("status of 401",)
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_have_attribute("data-code", "invalid_password")
    console.allow = ()

    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/")
    expect(page.locator("#service-state")).to_have_text("service: connected", timeout=30_000)
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("#token-form")).to_be_hidden()
    cookie = next(c for c in context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert COOKIE not in page.evaluate("document.cookie"), "a script can read the session cookie"

    # The privacy switch, with the session alone (no token typed in).
    switch = page.locator('#cameras tbody tr[data-camera="hall"] button.switch')
    expect(switch).to_have_attribute("data-state", "ON", timeout=30_000)
    switch.click()
    expect(switch).to_have_attribute("data-state", "OFF", timeout=15_000)
    assert hall_analysis(base) == "OFF"
    switch.click()
    expect(switch).to_have_attribute("data-state", "ON", timeout=15_000)
    assert hall_analysis(base) == "ON"
    # Past the 2 s poll: the session keeps the page connected.
    page.wait_for_timeout(2500)
    expect(page.locator("#service-state")).to_have_text("service: connected")
    assert console.errors == [], console.errors

    # A poll that lands between the logout and the navigation is refused: expected too.
    console.allow = ("status of 401",)
    page.click("#logout")
    expect(page).to_have_url(f"{base}/login")
    assert not [c for c in context.cookies() if c["name"] == COOKIE]
    page.goto(f"{base}/docs")
    expect(page).to_have_url(f"{base}/login?next=%2Fdocs")
    assert console.errors == [], console.errors
