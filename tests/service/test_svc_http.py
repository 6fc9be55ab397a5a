"""HTTP API against real onnxruntime and a real face: /infer, typed errors, health, admin token."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from harness.images import encode, one_face_frame
from harness.service import live_server
from model_store import ModelStore
from service.app import create_app
from service.config import Settings
from service.demo import background
from tests.service.conftest import local_client
from tests.service.test_svc_units import png_header

TOKEN = {"Authorization": "Bearer test-token"}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with local_client(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return encode(one_face_frame())


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert "Traceback" not in resp.text


def check_face_result(body: dict, settings: Settings) -> None:
    store = ModelStore(settings.model.store)
    version = store.resolve("ean", "stable")
    labels = store.manifest("ean", version).labels
    assert body["model_version"] == version and body["model"] == {"name": "ean", "version": version}
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    assert list(face["scores"]) == labels and face["label"] in labels
    assert sum(face["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["label"] == max(face["scores"], key=face["scores"].get)
    box = face["box"]
    # The face is pasted 220 px wide around the frame's centre.
    assert 150 < box["x"] + box["w"] / 2 < 500 and 60 < box["w"] < 260
    assert set(body["timings_ms"]) >= {"decode", "detect", "classify", "total"}
    assert body["request_id"]


def test_infer_one_real_face_every_input_form(client: TestClient, settings: Settings, face_jpeg: bytes) -> None:
    multipart = client.post("/infer", files={"file": ("face.jpg", face_jpeg, "image/jpeg")})
    assert multipart.status_code == 200, multipart.text
    check_face_result(multipart.json(), settings)
    as_json = client.post("/infer", json={"image": base64.b64encode(face_jpeg).decode()})
    check_face_result(as_json.json(), settings)
    png = encode(one_face_frame(), ".png")
    raw = client.post("/infer", content=png, headers={"Content-Type": "image/png", "X-Request-ID": "req-1"})
    check_face_result(raw.json(), settings)
    assert raw.json()["request_id"] == "req-1" and raw.headers["x-request-id"] == "req-1"
    webp = client.post("/infer", files={"file": ("f.webp", encode(one_face_frame(), ".webp"), "image/webp")})
    check_face_result(webp.json(), settings)
    assert multipart.json()["faces"][0]["label"] == as_json.json()["faces"][0]["label"]


def test_no_face_is_200_with_an_empty_list(client: TestClient) -> None:
    resp = client.post("/infer", files={"file": ("empty.jpg", encode(background(640, 480)), "image/jpeg")})
    assert resp.status_code == 200
    assert resp.json()["faces"] == []


def test_bad_inputs_get_typed_4xx(client: TestClient, face_jpeg: bytes) -> None:
    cases = [
        (client.post("/infer", files={"file": ("x.jpg", b"\x13garbage bytes" * 50, "image/jpeg")}),
         415, "unsupported_image_format"),
        (client.post("/infer", files={"file": ("t.jpg", face_jpeg[: len(face_jpeg) // 2], "image/jpeg")}),
         422, "invalid_image"),
        (client.post("/infer", files={"file": ("bomb.png", png_header(30000, 30000) + b"\0" * 64, "image/png")}),
         413, "image_too_large"),
        (client.post("/infer", content=face_jpeg, headers={"Content-Type": "text/plain"}),
         415, "unsupported_media_type"),
        (client.post("/infer", content=face_jpeg), 415, "unsupported_media_type"),
        (client.post("/infer", content=b"{not json", headers={"Content-Type": "application/json"}),
         400, "invalid_json"),
        (client.post("/infer", json={"image": "!!not base64!!"}), 400, "invalid_base64"),
        (client.post("/infer", json={"picture": "AAAA"}), 422, "missing_image"),
        (client.post("/infer", files={"other": ("x.jpg", face_jpeg, "image/jpeg")}), 422, "missing_file"),
        (client.post("/infer", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data"}),
         400, "bad_multipart"),
        (client.post("/infer", content=b"", headers={"Content-Type": "image/jpeg"}), 422, "empty_image"),
        (client.get("/nowhere"), 404, "not_found"),
        (client.get("/infer"), 405, "method_not_allowed"),
    ]  # fmt: skip
    for resp, status, code in cases:
        assert_error(resp, status, code)


def test_body_limit_before_decoding_on_a_real_server(settings: Settings) -> None:
    """A 50 MB body is refused by its Content-Length, and a chunked one as soon as it passes the limit."""
    with live_server(create_app(settings)) as url:
        body = b"\xff\xd8\xff" + b"\0" * (50 * 1024 * 1024)
        try:
            resp = httpx.post(f"{url}/infer", content=body, headers={"Content-Type": "image/jpeg"}, timeout=30)
        except httpx.TransportError:  # pragma: no cover - the server may close while we still upload
            pytest.fail("the server closed the connection without a 413")
        assert_error(resp, 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:
            for _ in range(50):
                yield b"\0" * (1024 * 1024)

        resp = httpx.post(f"{url}/infer", content=chunks(), headers={"Content-Type": "image/jpeg"}, timeout=30)
        assert_error(resp, 413, "payload_too_large")
        # The server is still fine afterwards.
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}


def test_health_ready_models_cameras_metrics(client: TestClient, settings: Settings, face_jpeg: bytes) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["mqtt"] == "disabled"
    models = client.get("/models").json()
    store = ModelStore(settings.model.store)
    version = store.resolve("ean", "stable")
    served = models["served"]
    assert served["version"] == version
    assert served["sha256"] == store.manifest("ean", version).files["model.onnx"].sha256
    assert models["aliases"]["stable"] == version and version in models["versions"]
    assert client.get("/cameras").json() == {"cameras": []}
    client.post("/infer", files={"file": ("face.jpg", face_jpeg, "image/jpeg")})
    text = client.get("/metrics").text
    assert f'fer_model_info{{file="model.onnx",name="ean",sha256="{served["sha256"]}",version="{version}"}} 1.0' in text
    assert 'fer_infer_seconds_bucket{le="0.0001",stage="classify"}' in text
    assert 'fer_http_requests_total{route="/infer",status="200"} 1.0' in text
    assert 'fer_model_reloads_total{result="failed"} 0.0' in text


def test_admin_routes_check_the_token(client: TestClient, make_settings: Callable[..., Settings]) -> None:
    for path, body in (("/models/reload", None), ("/models/promote", {"version": 1}), ("/models/rollback", {})):
        assert_error(client.post(path, json=body), 401, "unauthorized")
        assert_error(client.post(path, json=body, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert_error(client.post(path, json=body, headers={"Authorization": "Basic dGVzdA=="}), 401, "unauthorized")
    ok = client.post("/models/reload", headers=TOKEN)
    assert ok.status_code == 200 and ok.json()["result"] == "unchanged"
    assert_error(client.post("/models/promote", json={"version": 999}, headers=TOKEN), 422, "unknown_version")
    assert_error(client.post("/models/promote", json={"version": "x"}, headers=TOKEN), 422, "validation_error")
    with local_client(create_app(make_settings(api={"token": None}))) as no_token:
        resp = no_token.post("/models/reload", headers=TOKEN)
        assert_error(resp, 401, "admin_disabled")
        assert resp.headers["www-authenticate"] == "Bearer"
    assert json.loads(client.get("/healthz").text) == {"status": "ok"}


def test_swagger_ui_is_off_unless_enabled(make_settings: Callable[..., Settings]) -> None:
    """Swagger UI's page loads its script from a CDN: not by default, so an offline gateway's origin runs no
    third-party script. The OpenAPI document itself is the service's own, and stays."""
    with local_client(create_app(make_settings())) as client:
        assert_error(client.get("/docs"), 404, "not_found")
        assert client.get("/openapi.json").json()["info"]["title"] == "fer-edge"
    with local_client(create_app(make_settings(api={"docs": True}))) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
