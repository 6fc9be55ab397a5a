"""Hot reload: a new version is picked up, a corrupt one refused while the old keeps serving, and
/infer requests during swaps all succeed, each on one consistent version."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from harness.images import encode, one_face_frame
from harness.machine import wait_until
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


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    return encode(one_face_frame())


def infer(client: TestClient | httpx.Client, jpeg: bytes) -> dict:
    resp = client.post("/infer", files={"file": ("f.jpg", jpeg, "image/jpeg")})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_new_version_is_picked_up_with_its_own_labels(
    make_settings: Callable[..., Settings], store_root: Path, face_jpeg: bytes
) -> None:
    store = ModelStore(store_root)
    old = store.resolve("ean", "stable")
    labels = list(reversed(store.manifest("ean", old).labels))
    new = publish_copy(store, labels=labels)
    with local_client(create_app(make_settings())) as client:
        assert infer(client, face_jpeg)["model_version"] == old
        store.set_alias("ean", "stable", new)
        wait_until(lambda: client.get("/models").json()["served"]["version"] == new, 10, what="swap")
        body = infer(client, face_jpeg)
        assert body["model_version"] == new
        # Labels come from the new manifest, never from the code.
        assert list(body["faces"][0]["scores"]) == labels
        assert metric(client, 'fer_model_reloads_total{result="swapped"}') == 1
        assert client.get("/models").json()["last_reload"]["result"] == "swapped"


def test_corrupt_versions_are_refused_and_the_old_keeps_serving(
    make_settings: Callable[..., Settings], store_root: Path, face_jpeg: bytes
) -> None:
    store = ModelStore(store_root)
    old = store.resolve("ean", "stable")
    bad_hash = publish_copy(store)
    model_path = store.version_dir("ean", bad_hash) / "model.onnx"
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_path.write_bytes(bytes(data))
    not_onnx = publish_copy(store, model_bytes=b"this is not an onnx graph" * 100)
    with local_client(create_app(make_settings())) as client:
        store.set_alias("ean", "stable", bad_hash)
        wait_until(lambda: metric(client, 'fer_model_reloads_total{result="failed"}') == 1, 10, what="refusal")
        models = client.get("/models").json()
        assert models["served"]["version"] == old
        assert "sha256 mismatch" in models["last_reload"]["error"]
        assert infer(client, face_jpeg)["model_version"] == old
        # The watcher does not count the same refusal on every poll; an explicit reload retries.
        time.sleep(0.5)
        assert metric(client, 'fer_model_reloads_total{result="failed"}') == 1
        resp = client.post("/models/reload", headers=TOKEN)
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "reload_failed"
        assert metric(client, 'fer_model_reloads_total{result="failed"}') == 2

        store.set_alias("ean", "stable", not_onnx)
        wait_until(lambda: metric(client, 'fer_model_reloads_total{result="failed"}') == 3, 10, what="refusal")
        assert "onnxruntime cannot load" in client.get("/models").json()["last_reload"]["error"]
        assert infer(client, face_jpeg)["model_version"] == old
        assert client.get("/readyz").status_code == 200

        # Promotion checks the files before moving the alias.
        resp = client.post("/models/promote", json={"version": bad_hash}, headers=TOKEN)
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "verify_failed"
        resp = client.post("/models/promote", json={"version": old}, headers=TOKEN)
        assert resp.status_code == 200 and resp.json()["version"] == old
        assert metric(client, 'fer_model_reloads_total{result="swapped"}') == 0


def test_concurrent_infer_during_swaps_all_succeed(
    make_settings: Callable[..., Settings], store_root: Path, face_jpeg: bytes
) -> None:
    store = ModelStore(store_root)
    v1 = store.resolve("ean", "stable")
    labels_v1 = store.manifest("ean", v1).labels
    v2 = publish_copy(store, labels=list(reversed(labels_v1)))
    labels = {v1: labels_v1, v2: list(reversed(labels_v1))}
    results: list[tuple[int, dict]] = []
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                resp = http.post("/infer", files={"file": ("f.jpg", face_jpeg, "image/jpeg")})
                results.append((resp.status_code, resp.json()))

    with live_server(create_app(make_settings())) as url:
        threads = [threading.Thread(target=hammer, args=(url,)) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(6):
                target = v2 if i % 2 == 0 else v1
                resp = httpx.post(f"{url}/models/promote", json={"version": target}, headers=TOKEN, timeout=30)
                assert resp.status_code == 200, resp.text
                # The watcher may have swapped first; either way the target is now served.
                assert resp.json()["reload"]["result"] in ("swapped", "unchanged")
                assert httpx.get(f"{url}/models").json()["served"]["version"] == target
                time.sleep(0.15)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        served = httpx.get(f"{url}/models").json()["served"]["version"]
    assert served == v1
    assert len(results) >= 8
    assert all(status == 200 for status, _ in results), [b for s, b in results if s != 200][:3]
    seen_versions = {body["model_version"] for _, body in results}
    assert seen_versions <= {v1, v2} and len(seen_versions) == 2
    for _, body in results:
        # One request, one model: the labels always belong to the version the response names.
        assert list(body["faces"][0]["scores"]) == labels[body["model_version"]]


def test_a_manifest_naming_tensors_the_graph_lacks_is_refused(
    make_settings: Callable[..., Settings], store_root: Path, face_jpeg: bytes
) -> None:
    """The service feeds and reads the tensors the manifest names; it never guesses them."""
    store = ModelStore(store_root)
    old = store.resolve("ean", "stable")
    m = store.manifest("ean", old)
    bad_output = publish_copy(store, output=m.output.model_copy(update={"name": "logits"}))
    bad_input = publish_copy(store, input=m.input.model_copy(update={"name": "image"}))
    with local_client(create_app(make_settings())) as client:
        for n, (bad, text) in enumerate(((bad_output, "output 'logits'"), (bad_input, "input 'image'")), start=1):
            store.set_alias("ean", "stable", bad)
            wait_until(lambda n=n: metric(client, 'fer_model_reloads_total{result="failed"}') == n, 10,
                       what="refusal")
            assert text in client.get("/models").json()["last_reload"]["error"]
            assert infer(client, face_jpeg)["model_version"] == old
