"""What an attacker or a flaky network sends: odd bodies, 500s, hang-ups, stalls and image bombs, on a real
uvicorn with the service's own server settings."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from harness.images import encode, one_face_frame
from harness.machine import wait_until
from harness.service import live_server
from service.app import create_app
from service.config import Settings
from service.server import server_config
from tests.service.conftest import local_client
from tests.service.test_svc_http import assert_error


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@contextlib.contextmanager
def served(app: FastAPI, settings: Settings) -> Iterator[str]:
    """The app on the service's own uvicorn configuration (protocol, timeouts, connection cap)."""

    def config(port: int) -> uvicorn.Config:
        api = settings.api.model_copy(update={"port": port})
        return server_config(app, settings.model_copy(update={"api": api, "log_level": "WARNING"}))

    with live_server(app, config) as url:
        yield url


def metric(url: str, name: str, labels: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def test_hostile_json_and_multipart_get_400(settings: Settings) -> None:
    with local_client(create_app(settings)) as client:
        deep = b"[" * 1000 + b"]" * 1000
        resp = client.post("/infer", content=b'{"image": ' + deep + b"}", headers={"Content-Type": "application/json"})
        assert_error(resp, 400, "invalid_json")
        huge = b'{"image": "AAAA", "n": ' + b"7" * 5000 + b"}"
        assert_error(client.post("/infer", content=huge, headers={"Content-Type": "application/json"}),
                     400, "invalid_json")  # fmt: skip
        boundary = "b" * 300
        body = f"--{boundary}\r\nContent-Disposition: form-data; name=file\r\n\r\nx\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        resp = client.post("/infer", content=body, headers=headers)
        assert_error(resp, 400, "bad_multipart")


def test_a_500_keeps_the_connection_usable_and_is_logged_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with served(app, settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        for _ in range(5):
            resp = http.get("/boom")
            assert_error(resp, 500, "internal_error")
            assert resp.headers["connection"] == "close"
            # The next request on the same client must not fail.
            assert http.get("/healthz").status_code == 200
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 5, [r.getMessage() for r in errors]
        assert metric(url, "fer_http_requests_total", 'route="/boom",status="500"') == 5


def test_a_client_hanging_up_mid_body_is_not_a_server_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with served(create_app(settings), settings) as url:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                          b"Content-Length: 100000\r\n\r\n" + b"\xff\xd8\xff" + b"\0" * 1000)  # fmt: skip
                time.sleep(0.2)
        wait_until(lambda: metric(url, "fer_http_requests_total", 'route="/infer",status="499"') == 3, 10,
                   what="three client hang-ups counted")  # fmt: skip
        assert metric(url, "fer_http_requests_total", 'route="/infer",status="500"') == 0
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert httpx.get(f"{url}/healthz").status_code == 200


def _closed_by_server(s: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open past ``timeout``."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


def test_stalled_connections_are_closed_and_capped(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api={"header_timeout_s": 1, "body_timeout_s": 1, "max_connections": 8})
    with served(create_app(settings), settings) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        partial = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for s in partial:
            s.sendall(b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow_body = socket.create_connection(("127.0.0.1", port))
        slow_body.sendall(b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                          b"Content-Length: 1000\r\n\r\n\xff\xd8\xff")  # fmt: skip
        # 5 held, so 3 more fit; the 4th is turned away with a typed 503.
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        refused = _closed_by_server(extra[-1], 5)
        assert refused is not None and refused.startswith(b"HTTP/1.1 503"), refused
        assert b'"code":"too_many_connections"' in refused.replace(b" ", b"")
        for s in extra:
            s.close()
        started = time.monotonic()
        for s in silent:
            assert _closed_by_server(s, 5) == b""
        for s in partial:
            answer = _closed_by_server(s, 5)
            assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        answer = _closed_by_server(slow_body, 5)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        assert b"request_timeout" in answer and b"connection: close" in answer.lower()
        assert time.monotonic() - started < 4
        for s in [*silent, *partial, slow_body]:
            s.close()
        assert httpx.get(f"{url}/healthz").status_code == 200


def _claimed_jpeg(width: int, height: int) -> bytes:
    """A tiny real JPEG whose frame header is rewritten to claim another size (libjpeg fills the rest grey)."""
    data = bytearray(encode(np.full((16, 16, 3), 128, np.uint8)))
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_tiny_jpeg_claiming_6000x6000_is_decoded_reduced() -> None:
    """Peak memory of decoding it in a fresh interpreter: the full size would cost over 100 MB."""
    code = f"""
import resource
from service.infer.imaging import decode_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image, header, _ = decode_image({_claimed_jpeg(6000, 6000)!r}, max_pixels=40_000_000, max_side=16384, want_side=1280)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(image.shape[1], image.shape[0], header.width, header.height, (after - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    w, h, hw, hh, grown_mb = map(int, out)
    assert (hw, hh) == (6000, 6000)
    assert (w, h) == (1500, 1500)
    assert grown_mb < 40


def test_reduced_decode_reports_boxes_in_the_original_image(settings: Settings) -> None:
    big = cv2.resize(one_face_frame(), (3200, 2400), interpolation=cv2.INTER_CUBIC)
    with local_client(create_app(settings)) as client:
        resp = client.post("/infer", files={"file": ("big.jpg", encode(big), "image/jpeg")})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["image"] == {"width": 3200, "height": 2400, "format": "jpeg"}
        [face] = body["faces"]
        # The face is pasted 220 px wide around the centre of the 640-wide frame: ×5 here.
        assert 750 < face["box"]["x"] + face["box"]["w"] / 2 < 2500 and 300 < face["box"]["w"] < 1300


def test_decoded_pixels_in_flight_are_bounded_across_requests(make_settings: Callable[..., Settings]) -> None:
    from service.infer.imaging import PixelBudget

    budget = PixelBudget(100)
    order: list[str] = []
    with budget.hold(60):
        t = threading.Thread(target=lambda: (budget.hold(60).__enter__(), order.append("second")))
        t.start()
        time.sleep(0.2)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]
    settings = make_settings(api={"max_decode_pixels": 1_000_000})
    png = encode(np.zeros((1200, 1000, 3), np.uint8), ".png")
    with local_client(create_app(settings)) as client:
        resp = client.post("/infer", content=png, headers={"Content-Type": "image/png"})
        assert_error(resp, 413, "image_too_large")
        assert json.loads(resp.text)["error"]["message"].startswith("1000x1200")


def test_request_bodies_in_flight_are_bounded_across_connections(make_settings: Callable[..., Settings]) -> None:
    """While one upload holds the whole body budget, another waits for it instead of being read."""
    mib = 1024 * 1024
    settings = make_settings(api={"max_upload_bytes": mib, "max_body_bytes_in_flight": mib, "body_timeout_s": 2})
    with served(create_app(settings), settings) as url:
        port = int(url.rsplit(":", 1)[1])
        head = b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(head % (900 * 1024) + b"\xff\xd8\xff" + b"\0" * 1000)
        time.sleep(0.3)
        answers: dict[str, float] = {}

        def second() -> None:
            body = b"\xff\xd8\xff" + b"\0" * (800 * 1024)
            resp = httpx.post(f"{url}/infer", content=body, headers={"Content-Type": "image/jpeg"}, timeout=30)
            assert resp.status_code == 422, resp.text
            answers["second"] = time.monotonic()

        t = threading.Thread(target=second)
        t.start()
        answer = _closed_by_server(stalled, 10)
        answers["stalled"] = time.monotonic()
        t.join(30)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        assert answers["second"] >= answers["stalled"] - 0.05, answers
        assert httpx.get(f"{url}/healthz").status_code == 200
