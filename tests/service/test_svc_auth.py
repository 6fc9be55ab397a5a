"""The HTTP surface off loopback: the service bound to 0.0.0.0 (all traffic still goes to 127.0.0.1)
refuses every route of its route table without credentials and admits each with the page's session
cookie and with the bearer token; /healthz is open, /metrics only with api.metrics_open or the token,
which may come from api.token_file as compose's Prometheus sends it. Also: the generated password
(printed once, kept hashed, across restarts), the login rate limit, cross-site refusals, logout, and
loopback staying open."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount

from harness.images import encode, one_face_frame
from harness.machine import free_port, wait_until
from harness.service import ROOT, ServiceProcess, live_server
from service.api.auth import COOKIE, CSRF_HEADER
from service.api.sessions import SessionStore
from service.app import create_app
from service.config import ApiConfig, ConfigError, Settings, load_settings
from service.config._base import SecretFileError
from service.server import server_config
from tests.service.test_svc_http import assert_error

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before lazily included routers
    iter_route_contexts = None  # type: ignore[assignment]

TOKEN = "test-token"
PASSWORD = "correct horse battery staple"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
JSON_ACCEPT = {"Accept": "application/json"}
BROWSER_ACCEPT = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
# Refusals of the gate; any other answer means the route's own code ran.
GATE_CODES = {"unauthorized", "csrf_failed", "admin_disabled", "too_many_attempts"}
# What stands in for a path parameter: a configured camera, so the route does its real work.
PATH_VALUES = {"camera_id": "hall"}
OPEN = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login")}


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return encode(one_face_frame())


@pytest.fixture
def secured(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[..., Settings]:
    """Settings bound to 0.0.0.0 with a token, a password and a camera that never opens."""

    def build(**api: Any) -> Settings:
        return make_settings(
            api={"host": "0.0.0.0", "token": TOKEN, "password": PASSWORD, "docs": True, **api},
            cameras=[{"id": "hall", "source": str(tmp_path / "no-such-clip.mp4")}],
        )

    return build


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[tuple[str, FastAPI]]:
    """The app on a real uvicorn with the service's own server config, bound where the settings say;
    yields the 127.0.0.1 URL that every request of these tests goes to."""
    app = create_app(settings)
    hosts: list[str] = []

    def config(port: int) -> uvicorn.Config:
        cfg = server_config(app, settings.model_copy(update={"api": settings.api.model_copy(update={"port": port})}))
        hosts.append(cfg.host)
        return cfg

    with live_server(app, config) as url:
        assert hosts == [settings.api.host]
        yield url, app


def flat_routes(app: FastAPI) -> list[tuple[BaseRoute, Any]]:
    """(route, what it answers as): FastAPI from 0.16x keeps included routers as one entry each,
    which ``iter_route_contexts`` opens up; older ones list every route in ``app.routes``."""
    if iter_route_contexts is None:
        return [(route, route) for route in app.routes]
    return [(ctx.original_route, ctx) for ctx in iter_route_contexts(app.routes)]


def route_table(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app answers, from its own route table: a route added later is
    checked without anyone listing it here. Static mounts contribute each of their files."""
    found: list[tuple[str, str]] = []
    for route, view in flat_routes(app):
        if isinstance(route, Mount):
            directory = Path(route.app.directory)  # type: ignore[attr-defined]
            found += [("GET", f"{view.path}/{f.name}") for f in sorted(directory.iterdir()) if f.is_file()]
            continue
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PATH_VALUES.get(m.group(1), "x"), view.path)
        found += [(method, path) for method in sorted(set(view.methods) - {"HEAD"})]
    # Logging out ends the session the other requests use: last.
    return sorted(found, key=lambda mp: mp[1] == "/logout")


def example(method: str, path: str, face_jpeg: bytes) -> dict[str, Any]:
    """A request body that lets the route do its real work; a route not named here gets none."""
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/infer"): {"content": face_jpeg, "headers": {"Content-Type": "image/jpeg"}},
        ("PUT", "/cameras/hall/analysis"): {"json": {"state": "ON"}},
        ("POST", "/models/promote"): {"json": {"version": 1}},
        ("POST", "/models/rollback"): {"json": {"alias": "stable"}},
        ("POST", "/login"): {"json": {"password": PASSWORD}},
    }
    return bodies.get((method, path), {})


def send(
    base: str, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None = None
) -> tuple[int, httpx.Headers, Any]:
    """One request on a fresh connection (no cookie jar), with ``body`` from ``example``; an event
    stream is not read past its head."""
    kw = dict(body or {})
    headers = {**kw.pop("headers", {}), **headers}
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=30)) as client,
        client.stream(method, base + path, headers=headers, **kw) as r,
    ):
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            return r.status_code, r.headers, None
        r.read()
        try:
            return r.status_code, r.headers, r.json()
        except ValueError:
            return r.status_code, r.headers, r.text


def assert_admitted(status: int, body: Any, what: str) -> None:
    assert status < 500 and status not in (401, 403, 429), (what, status, body)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        assert body["error"]["code"] not in GATE_CODES, (what, body)


def login(base: str, password: str = PASSWORD) -> tuple[str, str, httpx.Response]:
    """Logs in as a script would (JSON); returns the session cookie's value, the CSRF token and the answer."""
    r = httpx.post(f"{base}/login", json={"password": password}, timeout=30)
    assert r.status_code == 200, r.text
    return r.cookies[COOKIE], r.json()["csrf_token"], r


def stream_until_closed(url: str, headers: dict[str, str]) -> float:
    """Reads an event stream to its end; returns when that was (time.monotonic)."""
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(5, read=30)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for _ in r.iter_bytes():
            pass
    return time.monotonic()


def with_session(session_id: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"Cookie": f"{COOKIE}={session_id}"}
    return {**headers, CSRF_HEADER: csrf} if csrf else headers


# -- every route, off loopback --------------------------------------------------------------------


def test_every_route_off_loopback_needs_credentials_and_admits_the_session_and_the_token(
    secured: Callable[..., Settings], face_jpeg: bytes
) -> None:
    # Many refusals of wrong tokens below: the rate limit is tested on its own.
    settings = secured(login_max_failures=1000)
    with serve(settings) as (base, app):
        routes = route_table(app)
        protected = [mp for mp in routes if mp not in OPEN]
        paths = {p for _, p in protected}
        # The surface the issue names, so that an empty table cannot pass.
        named = {"/", "/docs", "/openapi.json", "/metrics", "/models", "/cameras", "/dashboard/state",
                 "/dashboard/stream", "/dashboard/static/app.js", "/infer", "/cameras/hall/analysis"}  # fmt: skip
        assert named <= paths
        assert set(routes) >= OPEN

        # Open: the liveness probe and the login itself.
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        page = httpx.get(f"{base}/login?next=/docs")
        assert page.status_code == 200 and 'name="password"' in page.text and 'value="/docs"' in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]

        # Nothing, a wrong token, a made-up cookie: refused, typed, with a challenge, before any body is read.
        for method, path in protected:
            kw = example(method, path, face_jpeg)
            for headers in ({}, {"Authorization": "Bearer wrong"}, with_session("made-up")):
                status, answer_headers, body = send(base, method, path, {**JSON_ACCEPT, **headers}, kw)
                assert status == 401, (method, path, headers, status, body)
                assert body["error"]["code"] == "unauthorized" and body["error"]["message"], body
                assert answer_headers["www-authenticate"] == "Bearer"
            if method == "GET":
                # A browser is sent to the login page, which brings it back here afterwards.
                status, answer_headers, _ = send(base, method, path, BROWSER_ACCEPT)
                assert status == 303, (path, status)
                assert answer_headers["location"] == f"/login?next={quote(path, safe='')}"

        # The bearer token: admitted everywhere.
        for method, path in protected:
            status, _, body = send(base, method, path, {**JSON_ACCEPT, **BEARER}, example(method, path, face_jpeg))
            assert_admitted(status, body, f"token {method} {path}")

        # The page's session: admitted everywhere; its changes carry the CSRF token.
        session_id, csrf, _ = login(base)
        for method, path in protected:
            headers = with_session(session_id, csrf if method not in ("GET", "HEAD") else None)
            status, _, body = send(base, method, path, {**JSON_ACCEPT, **headers}, example(method, path, face_jpeg))
            assert_admitted(status, body, f"session {method} {path}")
        # The last route was /logout: the session is over.
        assert protected[-1] == ("POST", "/logout")
        assert_error(httpx.get(f"{base}/models", headers=with_session(session_id)), 401, "unauthorized")


def test_metrics_are_closed_by_default_and_opened_by_the_setting(secured: Callable[..., Settings]) -> None:
    with serve(secured()) as (base, _):
        assert_error(httpx.get(f"{base}/metrics"), 401, "unauthorized")
        assert httpx.get(f"{base}/metrics", headers=BEARER).text.startswith("# HELP")
    with serve(secured(metrics_open=True)) as (base, _):
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.status_code == 200 and "fer_http_requests_total" in metrics.text
        # Only /metrics: the rest stays closed.
        assert_error(httpx.get(f"{base}/models"), 401, "unauthorized")
        assert httpx.get(f"{base}/healthz").status_code == 200


# -- the token from a file, as compose's mqtt-auth leaves it for the service and Prometheus -------------


def test_the_token_in_token_file_opens_metrics_off_loopback_and_is_read_at_start(
    make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from_file = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718"  # what mqtt-auth makes: 192 bits, hex
    token_file = tmp_path / "api-token"
    token_file.write_text(f"{from_file}\n")
    settings = make_settings(
        api={"host": "0.0.0.0", "token": None, "token_file": str(token_file), "password": PASSWORD},
        cameras=[{"id": "hall", "source": str(tmp_path / "no-such-clip.mp4")}],
    )
    with caplog.at_level(logging.DEBUG), serve(settings) as (base, _):
        assert_error(httpx.get(f"{base}/metrics"), 401, "unauthorized")
        assert_error(httpx.get(f"{base}/metrics", headers=BEARER), 401, "unauthorized")
        metrics = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {from_file}"})
        assert metrics.status_code == 200 and "fer_http_requests_total" in metrics.text
        # The same token as any other: the admin routes too.
        switch = httpx.put(f"{base}/cameras/hall/analysis", json={"state": "ON"},
                           headers={"Authorization": f"Bearer {from_file}"})  # fmt: skip
        assert switch.status_code == 200, switch.text
        # Read once, at start: a token written later counts only after a restart.
        token_file.write_text("written-after-the-start\n")
        assert_error(httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer written-after-the-start"}), 401,
                     "unauthorized")  # fmt: skip
        assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {from_file}"}).status_code == 200
    assert from_file not in caplog.text


def test_an_unreadable_or_empty_token_file_stops_the_start_in_one_line(tmp_path: Path, store_root: Path) -> None:
    """Named by its key, never with the secret, and before a password is generated or the port opens."""
    missing = tmp_path / "auth" / "api-token"
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "api": {"host": "0.0.0.0", "port": port, "token_file": str(missing)},
        "mqtt": {"enabled": False},
        "model": {"store": str(store_root), "watch_interval_s": 0},
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
    result = subprocess.run([sys.executable, "-m", "service", "--config", str(config)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    named = [line for line in result.stderr.splitlines() if "api.token_file" in line]
    assert len(named) == 1 and named[0].endswith(f"cannot start: api.token_file {missing}: No such file or directory")
    assert not GENERATED.search(result.stdout) and not (tmp_path / "state" / "http-password.json").exists()

    # What else stops it, each in a line that names the key and holds nothing of the file.
    bad = {"empty": b"", "blank first line": b"  \nsecret-on-the-second-line\n", "not text": b"\xffsecret\xfe\n"}
    for what, body in bad.items():
        path = tmp_path / what
        path.write_bytes(body)
        with pytest.raises(SecretFileError) as refused:
            ApiConfig(host="0.0.0.0", token_file=path).bearer_token()
        assert isinstance(refused.value, OSError) and str(refused.value).startswith(f"api.token_file {path}: "), what
        assert "secret" not in str(refused.value), what
    with pytest.raises(SecretFileError, match="Is a directory"):
        ApiConfig(token_file=tmp_path).bearer_token()
    # The first line, without the blanks a header's value never has; a token given as such wins over the file.
    (tmp_path / "token").write_text("  from-the-file \r\nsecond line\n")
    token = ApiConfig(token_file=tmp_path / "token").bearer_token()
    assert token is not None and token.get_secret_value() == "from-the-file"
    given = ApiConfig(token="given", token_file=missing).bearer_token()
    assert given is not None and given.get_secret_value() == "given"
    assert ApiConfig().bearer_token() is None


# -- the login --------------------------------------------------------------------------------------


def test_login_cookie_session_info_and_logout(secured: Callable[..., Settings]) -> None:
    with serve(secured()) as (base, _):
        session_id, csrf, answer = login(base)
        cookie = answer.headers["set-cookie"]
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "path", "max-age"} <= attributes and "SameSite=Strict" in cookie, cookie
        assert re.search(r"Max-Age=86400\b", cookie) and "Path=/" in cookie
        assert "secure" not in attributes  # plain HTTP here; Secure is for HTTPS
        assert len(session_id) >= 40 and csrf != session_id

        info = httpx.get(f"{base}/session", headers=with_session(session_id)).json()
        assert info["credentials"] == "session" and info["csrf_token"] == csrf
        assert info["login_required"] is True and info["expires_at"] > time.time() + 86_000
        assert httpx.get(f"{base}/session", headers=BEARER).json()["credentials"] == "token"
        # The page's switch is enabled by the session.
        assert httpx.get(f"{base}/dashboard/state", headers=with_session(session_id)).json()["admin"] is True

        # The form: a redirect to where the browser was going, with the cookie.
        form = httpx.post(f"{base}/login", data={"password": PASSWORD, "next": "/docs"})
        assert form.status_code == 303 and form.headers["location"] == "/docs" and COOKIE in form.cookies
        # Never to another site, nor back to the login.
        for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example", "/login?next=/login"):
            form = httpx.post(f"{base}/login", data={"password": PASSWORD, "next": bad})
            assert form.status_code == 303 and form.headers["location"] == "/", bad
        # Already logged in, the login page goes on.
        again = httpx.get(f"{base}/login?next=/models", headers=with_session(session_id))
        assert again.status_code == 303 and again.headers["location"] == "/models"

        # Wrong password and bad bodies: typed, in JSON for JSON and in the page for the form.
        wrong = httpx.post(f"{base}/login", json={"password": "nope"})
        assert_error(wrong, 401, "invalid_password")
        wrong_form = httpx.post(f"{base}/login", data={"password": "nope", "next": "/docs"})
        assert wrong_form.status_code == 401 and 'data-code="invalid_password"' in wrong_form.text
        assert 'value="/docs"' in wrong_form.text and "nope" not in wrong_form.text
        assert_error(httpx.post(f"{base}/login", json={}), 422, "validation_error")
        assert_error(httpx.post(f"{base}/login", content=b"{", headers={"Content-Type": "application/json"}), 400,
                     "invalid_json")  # fmt: skip
        assert_error(httpx.post(f"{base}/login", content=b"pw", headers={"Content-Type": "text/plain"}), 415,
                     "unsupported_media_type")  # fmt: skip
        assert_error(httpx.post(f"{base}/login", json={"password": "x" * 5000}), 413, "payload_too_large")
        # A successful login cleared the count, so the three failures above are all that is counted.
        session_id2, _, _ = login(base)

        # Logout needs the CSRF token too; then the cookie is cleared and the session is gone, and
        # so is the event stream the page had open with it.
        assert_error(httpx.post(f"{base}/logout", headers=with_session(session_id)), 403, "csrf_failed")
        assert httpx.get(f"{base}/models", headers=with_session(session_id)).status_code == 200
        with ThreadPoolExecutor(1) as pool:
            stream = pool.submit(stream_until_closed, f"{base}/dashboard/stream", with_session(session_id))
            time.sleep(1.5)
            assert not stream.done(), "the stream ended before the logout"
            out = httpx.post(f"{base}/logout", headers=with_session(session_id, csrf))
            logged_out = time.monotonic()
            assert stream.result(timeout=15) - logged_out < 5
        assert out.status_code == 200 and out.json() == {"logged_out": True}
        assert re.search(rf"{COOKIE}=;.*Max-Age=0", out.headers["set-cookie"]), out.headers["set-cookie"]
        assert_error(httpx.get(f"{base}/models", headers=with_session(session_id)), 401, "unauthorized")
        assert_error(httpx.post(f"{base}/logout", headers=with_session(session_id, csrf)), 401, "unauthorized")
        # Other sessions are untouched.
        assert httpx.get(f"{base}/models", headers=with_session(session_id2)).status_code == 200


def test_cross_site_changes_are_refused(secured: Callable[..., Settings]) -> None:
    with serve(secured()) as (base, _):
        session_id, csrf, _ = login(base)
        url = f"{base}/cameras/hall/analysis"
        # What a page on another site can make a browser send: the cookie (were SameSite ignored),
        # no CSRF token, and the browser's own word that the request is cross-site.
        cross = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        attempts = [
            with_session(session_id),  # no token
            with_session(session_id, "not-the-token"),
            {**with_session(session_id, csrf), **cross},  # even with the token: the browser says cross-site
            {**with_session(session_id, csrf), "Sec-Fetch-Site": "same-site"},  # another port of this host
            {**with_session(session_id), **cross},
        ]
        for headers in attempts:
            assert_error(httpx.put(url, json={"state": "OFF"}, headers=headers), 403, "csrf_failed")
        state = {c["id"]: c for c in httpx.get(f"{base}/cameras", headers=BEARER).json()["cameras"]}["hall"]
        assert state["analysis"] == "ON", "a refused request changed the switch"
        # A login from another site is refused too (distributed guessing through visitors' browsers).
        assert_error(httpx.post(f"{base}/login", json={"password": PASSWORD}, headers=cross), 403, "csrf_failed")
        # Reading is not a change: no token needed.
        assert httpx.get(f"{base}/cameras", headers=with_session(session_id)).status_code == 200
        # The page itself: same origin and the token.
        same = {**with_session(session_id, csrf), "Sec-Fetch-Site": "same-origin", "Origin": base}
        ok = httpx.put(url, json={"state": "OFF"}, headers=same)
        assert ok.status_code == 200 and ok.json()["state"] == "OFF"
        ok = httpx.put(url, json={"state": "ON"}, headers=same)
        assert ok.status_code == 200 and ok.json()["state"] == "ON"
        # The token is not a cookie: a script with it needs no CSRF token.
        assert httpx.put(url, json={"state": "ON"}, headers=BEARER).status_code == 200


def test_failed_logins_and_tokens_are_rate_limited_per_address(secured: Callable[..., Settings]) -> None:
    # A window long enough for three scrypt checks on a loaded machine.
    window = 8
    with serve(secured(login_max_failures=3, login_window_s=window)) as (base, _):
        for _ in range(3):
            assert_error(httpx.post(f"{base}/login", json={"password": "guess"}), 401, "invalid_password")
        # Locked: even the right password is not tried, so the lock tells a guesser nothing.
        locked = httpx.post(f"{base}/login", json={"password": PASSWORD})
        assert_error(locked, 429, "too_many_attempts")
        retry_after = int(locked.headers["retry-after"])
        assert 1 <= retry_after <= window
        form = httpx.post(f"{base}/login", data={"password": PASSWORD})
        assert form.status_code == 429 and 'data-code="too_many_attempts"' in form.text and form.headers["retry-after"]
        # Bearer tokens are guesses at a secret too: same count, same lock.
        assert_error(httpx.get(f"{base}/models", headers=BEARER), 429, "too_many_attempts")
        time.sleep(retry_after + 0.2)
        session_id, _, _ = login(base)

        # Wrong tokens count as well.
        for _ in range(3):
            assert_error(httpx.get(f"{base}/models", headers={"Authorization": "Bearer guess"}), 401, "unauthorized")
        assert_error(httpx.get(f"{base}/models", headers=BEARER), 429, "too_many_attempts")
        # A session already made is no guess: the lock does not touch it.
        assert httpx.get(f"{base}/models", headers=with_session(session_id)).status_code == 200

        # A burst of concurrent guesses cannot slip past the count before the first is judged.
        time.sleep(window + 0.2)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx.post(f"{base}/login", json={"password": "guess"}, timeout=30),
                                    range(8)))  # fmt: skip
        codes = sorted(r.json()["error"]["code"] for r in answers)
        assert codes == ["invalid_password"] * 3 + ["too_many_attempts"] * 5, codes


def test_the_login_limit_counts_networks_not_addresses_and_a_success_buys_no_guesses(
    secured: Callable[..., Settings],
) -> None:
    """The review's way round a per-address count: 12 loopback addresses gave 60 guesses. Clients
    behind a proxy on this machine are told apart by X-Forwarded-For, as uvicorn trusts it from there."""

    def guess(headers: dict[str, str] | None = None, local: str | None = None, password: str = "guess") -> str:
        transport = httpx.HTTPTransport(local_address=local) if local else None
        with httpx.Client(transport=transport, timeout=30) as client:
            r = client.post(f"{base}/login", json={"password": password}, headers=headers or {})
        return "ok" if r.status_code == 200 else r.json()["error"]["code"]

    def via(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": address}

    with serve(secured(login_max_failures=5, login_window_s=600, login_max_failures_total=16)) as (base, _):
        codes = [guess(local=f"127.0.0.{i}") for i in range(1, 13)]
        assert codes == ["invalid_password"] * 5 + ["too_many_attempts"] * 7, codes
        # An IPv4 /24 and an IPv6 /64 are one network each; the next ones count afresh.
        codes = [guess(via(f"10.0.1.{i}")) for i in (1, 2, 3, 4, 5, 200)] + [guess(via("10.0.2.1"))]
        assert codes == ["invalid_password"] * 5 + ["too_many_attempts", "invalid_password"], codes
        codes = [guess(via(f"2001:db8:0:1::{i:x}")) for i in (1, 2, 0xFFFF)] + [guess(via("2001:db8:0:2::1"))]
        assert codes == ["invalid_password"] * 4, codes
        # 16 failures from everywhere together: the page's login is closed to every network now...
        assert guess(via("10.0.3.1")) == "invalid_password"
        assert [guess(via("10.0.4.1")), guess(via("10.0.5.1"), password=PASSWORD)] == ["too_many_attempts"] * 2
        # ...but not the bearer token, which no rate of guessing reaches.
        assert httpx.get(f"{base}/models", headers={**BEARER, **via("10.0.6.1")}).status_code == 200

    with serve(secured(login_max_failures=5, login_window_s=600)) as (base, _):
        here = via("10.9.9.1")
        assert [guess(here) for _ in range(4)] == ["invalid_password"] * 4
        assert guess(here, password=PASSWORD) == "ok"
        # The success took back its own count only: one more guess, then the lock.
        assert [guess(here), guess(here, password=PASSWORD)] == ["invalid_password", "too_many_attempts"]


# -- loopback --------------------------------------------------------------------------------------


def test_loopback_stays_open_and_still_checks_what_is_sent(
    make_settings: Callable[..., Settings], face_jpeg: bytes, tmp_path: Path
) -> None:
    settings = make_settings(cameras=[{"id": "hall", "source": str(tmp_path / "no-such-clip.mp4")}])
    assert settings.api.host == "127.0.0.1" and settings.api.password is None
    with serve(settings) as (base, app):
        for method, path in route_table(app):
            if method != "GET" or (method, path) in OPEN:
                continue
            status, _, body = send(base, method, path, BROWSER_ACCEPT if path == "/" else JSON_ACCEPT)
            assert status == 200, (path, status, body)
        assert httpx.post(f"{base}/infer", content=face_jpeg, headers={"Content-Type": "image/jpeg"}).status_code == 200
        # Changes still need the token; a wrong one is refused as before.
        url = f"{base}/cameras/hall/analysis"
        assert_error(httpx.put(url, json={"state": "OFF"}), 401, "unauthorized")
        assert_error(httpx.put(url, json={"state": "OFF"}, headers={"Authorization": "Bearer wrong"}), 401,
                     "unauthorized")  # fmt: skip
        assert httpx.put(url, json={"state": "ON"}, headers=BEARER).status_code == 200
        info = httpx.get(f"{base}/session").json()
        assert info == {"credentials": None, "csrf_token": None, "expires_at": None, "login_required": False,
                        "login_enabled": False}  # fmt: skip
        # No password, nothing to log into: the login page sends the browser on, and nothing was generated.
        assert httpx.get(f"{base}/login?next=/docs").headers["location"] == "/docs"
        assert_error(httpx.post(f"{base}/login", json={"password": "x"}), 403, "login_disabled")
    assert not (Path(settings.state_dir) / "http-password.json").exists()


def test_loopback_answers_only_its_own_names_and_refuses_changes_from_other_sites(
    make_settings: Callable[..., Settings], face_jpeg: bytes, tmp_path: Path
) -> None:
    """DNS rebinding: a page whose own name now points at 127.0.0.1 reads nothing, since its name is in
    Host. A form another site posts (it cannot read the answer, but the work would run) is refused."""
    settings = make_settings(cameras=[{"id": "hall", "source": str(tmp_path / "no-such-clip.mp4")}])
    jpeg = {"Content-Type": "image/jpeg"}
    with serve(settings) as (base, _):
        port = base.rsplit(":", 1)[1]
        for path in ("/dashboard/state", "/cameras", "/metrics", "/models", "/healthz"):
            r = httpx.get(base + path, headers={"Host": f"evil.example:{port}"})
            assert_error(r, 400, "invalid_host")
            message = r.json()["error"]["message"]
            assert "evil.example" in message and "api.allowed_hosts" in message
        assert_error(httpx.post(f"{base}/infer", content=face_jpeg, headers={**jpeg, "Host": "evil.example"}), 400,
                     "invalid_host")  # fmt: skip
        for name in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST."):
            assert httpx.get(f"{base}/dashboard/state", headers={"Host": name}).status_code == 200, name
        # Another site's form: Fetch Metadata where the browser sends it, else its Origin.
        for cross in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                      {"Origin": "http://evil.example"}, {"Origin": f"http://localhost:{int(port) + 1}"},
                      {"Origin": "null"}):  # fmt: skip
            assert_error(httpx.post(f"{base}/infer", content=face_jpeg, headers={**jpeg, **cross}), 403, "csrf_failed")
        # Reading is not a change; the page itself and scripts (no Origin) are served.
        assert httpx.get(f"{base}/cameras", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
        for own in ({"Sec-Fetch-Site": "same-origin", "Origin": base}, {"Origin": base}, {}):
            assert httpx.post(f"{base}/infer", content=face_jpeg, headers={**jpeg, **own}).status_code == 200, own
    # The list is the operator's: a name of the gateway's, sub-domains by pattern, and nothing else.
    named = make_settings(api={"allowed_hosts": ["gateway.lan", "*.fer.example"]})
    with serve(named) as (base, _):
        for name, status in (("gateway.lan", 200), ("cam.fer.example:8000", 200), ("fer.example", 400),
                             ("127.0.0.1", 400)):  # fmt: skip
            assert httpx.get(f"{base}/healthz", headers={"Host": name}).status_code == status, name


def test_off_loopback_any_name_reaches_the_credential_check_unless_a_list_is_set(
    secured: Callable[..., Settings],
) -> None:
    """Off loopback a rebound name gets what any stranger gets, a 401: the gateway's names on the LAN
    are not known in advance, so every Host is let through to the credential check by default."""
    with serve(secured()) as (base, _):
        assert_error(httpx.get(f"{base}/cameras", headers={"Host": "evil.example"}), 401, "unauthorized")
        assert httpx.get(f"{base}/cameras", headers={"Host": "gateway.lan", **BEARER}).status_code == 200
    with serve(secured(allowed_hosts=["gateway.lan"])) as (base, _):
        assert_error(httpx.get(f"{base}/cameras", headers={"Host": "evil.example", **BEARER}), 400, "invalid_host")
        assert httpx.get(f"{base}/cameras", headers={"Host": "gateway.lan", **BEARER}).status_code == 200


# -- the generated password, with the service as users run it ----------------------------------------


class SecuredService(ServiceProcess):
    """`python -m service`, ready once /readyz answers the bearer token (it needs credentials here)."""

    def wait_ready(self, timeout: float = 120) -> SecuredService:
        try:
            wait_until(self._ready, timeout, interval=0.1, what=f"service ready (log: {self.log})")
        except BaseException:
            self.kill()  # a service that never got ready must not outlive its test
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"service exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", headers=BEARER, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


GENERATED = re.compile(r"password was generated into (\S+) ")


def test_generated_password_is_written_once_kept_hashed_and_survives_restarts(tmp_path: Path, store_root: Path) -> None:
    """The generated password reaches its owner through a 0600 file that the log names, never through the
    log itself: Docker's json-file log and journald keep whatever the process writes."""
    port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(state),
        "api": {"host": "0.0.0.0", "port": port, "token": TOKEN},
        "mqtt": {"enabled": False},
        "model": {"store": str(store_root), "watch_interval_s": 0},
    }))  # fmt: skip
    log = tmp_path / "service.log"
    base = f"http://127.0.0.1:{port}"

    svc = SecuredService(config, port, log).start()
    try:
        named = GENERATED.findall(log.read_text())
        assert named == [str(state / "http-password.txt")], log.read_text()
        password = (state / "http-password.txt").read_text().strip()
        assert len(password) >= 20 and password not in log.read_text()
        assert stat.S_IMODE(os.stat(state / "http-password.txt").st_mode) == 0o600
        stored_text = (state / "http-password.json").read_text()
        stored = json.loads(stored_text)
        assert stored["source"] == "generated" and stored["hash"].startswith("$scrypt$ln=14,r=8,p=5$")
        assert password not in stored_text
        assert stat.S_IMODE(os.stat(state / "http-password.json").st_mode) == 0o600
        assert_error(httpx.post(f"{base}/login", json={"password": password + "x"}), 401, "invalid_password")
        session_id, _, _ = login(base, password)
    finally:
        assert svc.stop() == 0

    # A restart prints nothing new; the same password and the same session still work.
    svc = SecuredService(config, port, log).start()
    try:
        assert len(GENERATED.findall(log.read_text())) == 1, "a password was generated again"
        assert json.loads((state / "http-password.json").read_text()) == stored
        assert httpx.get(f"{base}/session", headers=with_session(session_id)).json()["credentials"] == "session"
        login(base, password)
    finally:
        assert svc.stop() == 0

    # A configured password takes precedence; sessions made under the old one end with it.
    svc = SecuredService(config, port, log, {"FER_API__PASSWORD": "chosen-password"}).start()
    try:
        assert_error(httpx.post(f"{base}/login", json={"password": password}), 401, "invalid_password")
        login(base, "chosen-password")
        assert_error(httpx.get(f"{base}/session", headers=with_session(session_id)), 401, "unauthorized")
        assert json.loads((state / "http-password.json").read_text())["source"] == "configured"
        # The generated password no longer logs in: its file goes, rather than mislead.
        assert not (state / "http-password.txt").exists()
    finally:
        assert svc.stop() == 0

    text = log.read_text()
    assert password not in text
    assert len(GENERATED.findall(text)) == 1
    # The log holds neither the hashes nor the configured password.
    assert stored["hash"] not in text and "chosen-password" not in text
    assert json.loads((state / "http-password.json").read_text())["hash"] not in text

    # An unreadable password file stops the start in one line, rather than opening up or locking out.
    (state / "http-password.json").write_text("not json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
    result = subprocess.run([sys.executable, "-m", "service", "--config", str(config)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "cannot start: cannot read the page's password hash" in result.stderr
    assert "Traceback" not in result.stderr


# -- sessions ----------------------------------------------------------------------------------------


def test_sessions_expire_renew_and_are_kept_only_as_hashes(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, ttl_s=1.0, password_fingerprint="fp")
    session_id, session = store.create()
    on_disk = (tmp_path / "http-sessions.json").read_text()
    assert session_id not in on_disk and session.key in on_disk
    assert stat.S_IMODE(os.stat(tmp_path / "http-sessions.json").st_mode) == 0o600
    assert not store.renew_if_due(session), "renewed before half its lifetime"
    time.sleep(0.6)
    first_end = session.expires_at
    assert store.renew_if_due(session) and session.expires_at > first_end
    # Another store on the same file (a restart) knows it; another password does not.
    assert SessionStore(tmp_path, 1.0, "fp").get(session_id) is not None
    assert SessionStore(tmp_path, 1.0, "other").get(session_id) is None
    wait_until(lambda: store.get(session_id) is None, 3, what="the session to expire")
    assert SessionStore(tmp_path, 1.0, "fp").get(session_id) is None


# -- the settings ------------------------------------------------------------------------------------


def test_the_settings_refuse_typos_and_short_passwords_and_hide_the_secrets() -> None:
    with pytest.raises(ConfigError, match=r"api\.metrics_opn .*did you mean metrics_open"):
        load_settings(None, {"FER_API__METRICS_OPN": "true"})
    with pytest.raises(ConfigError, match=r"api\.password .*at least 8 characters"):
        load_settings(None, {"FER_API__PASSWORD": ""})
    settings = load_settings(None, {"FER_API__PASSWORD": PASSWORD, "FER_API__TOKEN": TOKEN})
    assert PASSWORD not in settings.model_dump_json() and TOKEN not in settings.model_dump_json()
    loopback = ["127.0.0.1", "127.8.9.10", "::1", "localhost"]
    assert [ApiConfig(host=h).credentials_required for h in loopback] == [False] * 4
    others = ["0.0.0.0", "::", "192.168.1.20", "gateway.local", ""]
    assert [ApiConfig(host=h).credentials_required for h in others] == [True] * 5
