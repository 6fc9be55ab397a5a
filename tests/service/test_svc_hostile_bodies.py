"""The second review's bodies against `python -m service`: each small on the wire and built to cost far
more, sent 4 at once (api.max_concurrency). Each gets its typed 4xx quickly, and the service's peak
memory stays within a budget over the whole series. Before the budgets: a 400-scan JPEG held a core
for 10 s, four wide progressive JPEGs took the peak to 1.1 GB, and the JSON and multipart floods to
715 and 749 MB."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import cv2
import httpx
import pytest

from harness.hostile import json_flood, many_scans_jpeg, multipart_flood, wide_progressive_jpeg
from harness.images import demo_face_frame, demo_face_jpeg, encode
from harness.service import ServiceProcess
from harness.store import SEED_STORE

# What the series may add to the service's peak memory (the bound), and the time for an answer:
# 5 s on quiet cores; the slack is for a machine that shares them with a training.
MAX_GROWTH_MB = 200
MAX_ANSWER_S = 15


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("hostile")
    svc = ServiceProcess.configured(workdir, {
        "state_dir": str(workdir / "state"), "log_level": "WARNING", "mqtt": {"enabled": False},
        "model": {"store": str(SEED_STORE), "watch_interval_s": 0},
    }).start()  # fmt: skip
    try:
        yield svc
    finally:
        svc.stop()


def post_four(url: str, body: bytes, content_type: str) -> list[tuple[int, str, float]]:
    def one(_: int) -> tuple[int, str, float]:
        started = time.monotonic()
        r = httpx.post(f"{url}/infer", content=body, headers={"Content-Type": content_type}, timeout=120)
        return r.status_code, r.json()["error"]["code"], time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(4)))


def test_costly_bodies_are_refused_quickly_within_a_memory_budget(service: ServiceProcess) -> None:
    flood, flood_type = multipart_flood()
    cases = [
        ("400-scan JPEG", many_scans_jpeg(), "image/jpeg", 413, "image_too_large"),
        ("16384x2441 progressive JPEG", wide_progressive_jpeg(), "image/jpeg", 413, "image_too_large"),
        ("10 MB of JSON `[],`", json_flood(), "application/json", 422, "missing_image"),
        ("200k-part multipart", flood, flood_type, 400, "bad_multipart"),
    ]
    before = service.memory_kb("VmHWM") / 1024
    for what, body, content_type, status, code in cases:
        answers = post_four(service.url, body, content_type)
        assert [(s, c) for s, c, _ in answers] == [(status, code)] * 4, (what, answers)
        slowest = max(t for _, _, t in answers)
        assert slowest < MAX_ANSWER_S, f"{what}: {slowest:.1f} s"
    growth = service.memory_kb("VmHWM") / 1024 - before
    assert growth < MAX_GROWTH_MB, f"the series took the peak up by {growth:.0f} MB"
    # And the service still serves what it is for.
    r = httpx.post(f"{service.url}/infer", content=demo_face_jpeg(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["faces"], r.text


def test_the_shapes_users_send_still_work_past_the_parsing_bounds(service: ServiceProcess) -> None:
    jpeg = demo_face_jpeg()
    url = f"{service.url}/infer"
    as_json = {"Content-Type": "application/json"}
    as_multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    # JSON past 64 KiB in its one shape, with blanks and a data: URL; and a file part after other fields.
    photo = encode(cv2.resize(demo_face_frame(), (1600, 1200)), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95])
    text = json.dumps("data:image/jpeg;base64," + base64.b64encode(photo).decode())
    doc = b' {\n "image" :  ' + text.encode() + b"\n}"
    assert len(doc) > 64 * 1024
    assert httpx.post(url, content=doc, headers=as_json).json()["faces"]
    files = {"note": (None, "x" * 100), "other": ("a.txt", b"y" * 1000), "file": ("face.jpg", jpeg, "image/jpeg")}
    assert httpx.post(url, files=files).json()["faces"]
    # The shape, escaped characters and all, past 64 KiB: anything else there is refused by shape.
    big_other = json.dumps({"image": base64.b64encode(photo).decode(), "extra": 1}).encode()
    r = httpx.post(url, content=big_other, headers=as_json)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "missing_image"), r.text
    r = httpx.post(url, content=b'{"image": "\\u00e9' + b"A" * 70_000 + b'"}', headers=as_json)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_base64"), r.text
    r = httpx.post(url, content=b'{"image": "AAAA\x01' + b"A" * 70_000 + b'"}', headers=as_json)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json"), r.text
    # Small bodies keep their precise errors.
    r = httpx.post(url, content=b'{"image": "AAAA", "extra": 1}', headers=as_json)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error"), r.text
    # 17 parts, the file first: the count alone refuses it.
    body = b"".join(f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode() for i in range(17))
    r = httpx.post(url, content=body + b"--b--\r\n", headers=as_multipart)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_multipart") and "16 parts" in r.text, r.text
    head = b'--b\r\nContent-Disposition: form-data; name="file"\r\nX-Pad: ' + b"p" * 20_000 + b"\r\n\r\n"
    r = httpx.post(url, content=head + jpeg + b"\r\n--b--\r\n", headers=as_multipart)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_multipart"), r.text


def test_an_ordinary_progressive_photo_is_still_analysed(service: ServiceProcess) -> None:
    frame = cv2.resize(demo_face_frame(), (1920, 1440))
    photo = encode(frame, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    r = httpx.post(f"{service.url}/infer", content=photo, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["faces"], r.text
