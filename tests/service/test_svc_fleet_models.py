"""Model distribution for real (README, "Several gateways"): mosquitto, `python -m model_store serve` and three
`python -m service` gateways on loopback ports. Promote v2 centrally and all three serve it; one
gateway whose downloads arrive corrupt refuses them, retries with backoff and keeps serving v1 while
the other two swap; a staged rollout reaches the named gateway first."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.broker import Mosquitto, Subscriber
from harness.machine import free_port, terminate, wait_until
from harness.service import ServiceProcess
from harness.store import copy_store, publish_copy
from model_store import ModelStore
from tests.service.conftest import needs_broker

REPO = Path(__file__).resolve().parents[2]
GATEWAYS = ("gw-a", "gw-b", "gw-c")
# Generous: three services and a store server share two cores with whatever else runs.
SWAP_BOUND_S = 45.0

pytestmark = needs_broker


class CorruptingProxy:
    """An HTTP hop in front of the store server that, while `corrupt` is set, flips one byte of every
    .onnx it relays: a bad cache, disk or network between the centre and one gateway."""

    def __init__(self, upstream: str) -> None:
        self.corrupt = threading.Event()
        self.corrupted = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                try:
                    with urllib.request.urlopen(upstream + self.path, timeout=10) as resp:
                        status, body = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
                if proxy.corrupt.is_set() and self.path.endswith(".onnx") and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                    proxy.corrupted += 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("FER_")}
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        terminate(proc, 20)


def served(url: str) -> int | None:
    try:
        body = httpx.get(f"{url}/models", timeout=5).json()
    except httpx.HTTPError:
        return None
    return body["served"]["version"] if body.get("served") else None


def metric(url: str, name: str, labels: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def promote(central: Path, version: int, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "model_store", "--root", str(central), "promote", "ean", str(version),
                    *extra], cwd=REPO, check=True, capture_output=True, timeout=60)  # fmt: skip


def test_three_gateways_follow_the_central_store(tmp_path: Path) -> None:
    central = copy_store(tmp_path / "central")
    store = ModelStore(central)
    # Whatever the seed store's stable version is, two newer ones follow it.
    old = store.resolve("ean", "stable")
    new, newest = publish_copy(store), publish_copy(store)
    assert old < new < newest
    store_port = free_port()
    with contextlib.ExitStack() as stack:
        # Started inside the stack, so that no failure below leaves a broker running.
        broker = Mosquitto(tmp_path / "broker").start()
        stack.callback(broker.kill)
        watch = Subscriber(broker.port, ("fer/models/#", "fer/gateways/+/model"))
        stack.callback(watch.close)
        stack.enter_context(process(
            [sys.executable, "-m", "model_store", "--root", str(central), "serve", "--port", str(store_port),
             "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), "--poll-s", "0.3"],
            tmp_path / "store.log",
        ))  # fmt: skip
        store_url = f"http://127.0.0.1:{store_port}"
        wait_until(lambda: _get_ok(f"{store_url}/healthz"), 30, what="store server")
        proxy = CorruptingProxy(store_url)
        stack.callback(proxy.close)
        gateways: dict[str, ServiceProcess] = {}
        for gw in GATEWAYS:
            config = {
                "gateway_id": gw,
                "state_dir": str(tmp_path / gw / "state"),
                "api": {"token": "t"},
                "mqtt": {"port": broker.port, "reconnect_min_s": 1, "reconnect_max_s": 2},
                # An empty cache: each gateway fetches its first model from the store at start-up.
                "model": {"store": str(tmp_path / gw / "cache"), "watch_interval_s": 0.5},
                "distribution": {"enabled": True, "url": proxy.url if gw == "gw-c" else store_url,
                                 "retry_min_s": 0.5, "retry_max_s": 2},
            }  # fmt: skip
            gateways[gw] = ServiceProcess.configured(tmp_path / gw, config).launch()
            stack.callback(gateways[gw].stop)
        urls = {gw: svc.url for gw, svc in gateways.items()}
        try:
            for svc in gateways.values():
                svc.wait_ready()
            assert {gw: served(urls[gw]) for gw in GATEWAYS} == dict.fromkeys(GATEWAYS, old)
            ready = httpx.get(f"{urls['gw-b']}/readyz", timeout=5).json()
            assert ready["gateway"] == "gw-b" and ready["camera_clashes"] == {}
            announced = watch.wait_for(lambda ms: watch.snapshot("fer/models/ean/stable"), what="announcement")
            first = announced[-1].json()
            assert first["version"] == old and first["sha256"] == store.manifest("ean", old).files["model.onnx"].sha256

            # The new version goes stable while gw-c's downloads arrive corrupt.
            proxy.corrupt.set()
            started = time.monotonic()
            promote(central, new)
            wait_until(lambda: served(urls["gw-a"]) == new and served(urls["gw-b"]) == new, SWAP_BOUND_S, 0.1,
                       what="gw-a and gw-b on the new version")  # fmt: skip
            took = time.monotonic() - started
            print(f"gw-a and gw-b serve v{new} {took:.1f} s after the promote")
            # gw-c refuses each corrupt copy, backs off, retries, and keeps serving the old one meanwhile.
            wait_until(lambda: metric(urls["gw-c"], "fer_model_downloads_total", 'result="refused"') >= 3,
                       30, 0.2, what="gw-c refusing and retrying")  # fmt: skip
            assert served(urls["gw-c"]) == old
            assert httpx.get(f"{urls['gw-c']}/readyz", timeout=5).status_code == 200
            state = watch.wait_for(lambda ms: [m for m in watch.snapshot("fer/gateways/gw-c/model")
                                               if m.json()["state"] == "retrying"], what="gw-c retrying")[-1].json()
            assert state["version"] == old and state["wanted_version"] == new and "sha256" in state["error"]
            # Nothing of the refused copies is left in its cache.
            assert sorted(p.name for p in (tmp_path / "gw-c" / "cache" / "ean").iterdir()) == [".lock", str(old),
                                                                                           "aliases.json"]
            # The corruption ends: the next retry takes the new version.
            proxy.corrupt.clear()
            wait_until(lambda: served(urls["gw-c"]) == new, 30, 0.1,
                       what="gw-c on the new version once downloads are good")  # fmt: skip
            assert metric(urls["gw-a"], "fer_model_downloads_total", 'result="refused"') == 0

            # Staged rollout: the newest as candidate for gw-b only; the others stay on the stable one.
            promote(central, newest, "--alias", "candidate", "--gateways", "gw-b")
            wait_until(lambda: served(urls["gw-b"]) == newest, SWAP_BOUND_S, 0.1, what="gw-b on the candidate")
            time.sleep(2.0)
            assert (served(urls["gw-a"]), served(urls["gw-c"])) == (new, new)
            # Then stable moves for all.
            promote(central, newest)
            wait_until(lambda: all(served(urls[gw]) == newest for gw in GATEWAYS), SWAP_BOUND_S, 0.1,
                       what="all on the newest")  # fmt: skip
            states = {gw: watch.snapshot(f"fer/gateways/{gw}/model")[-1].json() for gw in GATEWAYS}
            assert all(s["state"] == "serving" and s["version"] == newest for s in states.values()), states
        except BaseException:
            for gw, svc in gateways.items():
                print(f"--- {gw}\n{svc.log.read_text()[-3000:]}")
            print(f"--- store\n{(tmp_path / 'store.log').read_text()[-2000:]}")
            raise


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_store_server_is_read_only_and_serves_sha256_etags(tmp_path: Path) -> None:
    central = copy_store(tmp_path / "central")
    store = ModelStore(central)
    v = store.resolve("ean", "stable")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-m", "model_store", "--root", str(central), "serve", "--port", str(port)],
                 tmp_path / "store.log"):  # fmt: skip
        wait_until(lambda: _get_ok(f"{url}/healthz"), 30, what="store server")
        index = httpx.get(f"{url}/v1/models/ean").json()
        assert index["versions"] == store.versions("ean")
        assert index["aliases"]["stable"] == {"version": v, "gateways": None}
        entry = store.manifest("ean", v).files["model.onnx"]
        resp = httpx.get(f"{url}/v1/models/ean/{v}/model.onnx")
        assert resp.status_code == 200 and len(resp.content) == entry.size
        assert resp.headers["etag"] == f'"{entry.sha256}"' and resp.headers["x-checksum-sha256"] == entry.sha256
        again = httpx.get(f"{url}/v1/models/ean/{v}/model.onnx", headers={"If-None-Match": resp.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        head = httpx.head(f"{url}/v1/models/ean/{v}/model.onnx")
        assert head.status_code == 200 and head.headers["content-length"] == str(entry.size)
        manifest = httpx.get(f"{url}/v1/models/ean/{v}/manifest.json")
        assert json.loads(manifest.content)["version"] == v
        # Only the store's own layout is reachable, and nothing can be written.
        for path in ("/v1/models/ean/1/.lock", "/v1/models/ean/aliases.json", "/v1/models/ean/1/../aliases.json",
                     "/v1/models/ean/9/model.onnx", "/v1/models/nope", "/etc/passwd"):  # fmt: skip
            bad = httpx.get(url + path)
            assert bad.status_code == 404, path
            assert set(bad.json()["error"]) == {"code", "message"}
        for method in ("POST", "PUT", "DELETE"):
            refused = httpx.request(method, f"{url}/v1/models/ean/{v}/model.onnx", content=b"x")
            assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"
        assert store.verify("ean", v) == []


@pytest.mark.parametrize("gateways", [["gw-b"], None])
def test_promote_records_which_gateways_take_an_alias(tmp_path: Path, gateways: list[str] | None) -> None:
    store = ModelStore(copy_store(tmp_path / "central"))
    v2 = publish_copy(store)
    store.set_alias("ean", "candidate", v2, gateways)
    assert store.aliases("ean")["candidate"] == v2
    assert store.alias_gateways("ean") == ({"candidate": ["gw-b"]} if gateways else {})


def fleet_settings(make_settings: Any, cache: Path, url: str, **distribution: Any) -> Any:
    return make_settings(
        gateway_id="gw-a",
        mqtt={"enabled": True, "port": free_port()},  # no broker: announcements never come
        model={"store": str(cache)},
        distribution={"enabled": True, "url": url, "retry_min_s": 0.1, "retry_max_s": 0.2, **distribution},
    )


def test_an_empty_cache_and_no_store_server_fail_the_start_in_one_line(tmp_path: Path, make_settings: Any) -> None:
    from service.models import ModelLoadError
    from service.runtime import Runtime

    settings = fleet_settings(make_settings, tmp_path / "cache", f"http://127.0.0.1:{free_port()}",
                              bootstrap_timeout_s=1)  # fmt: skip
    runtime = Runtime(settings)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="no model in the cache, none fetched from http://127"):
        runtime.start()
    assert time.monotonic() - started < 10
    runtime.stop()


def test_a_cached_model_serves_while_the_store_server_is_down(tmp_path: Path, make_settings: Any) -> None:
    from service.runtime import Runtime

    cache = copy_store(tmp_path / "cache")
    runtime = Runtime(fleet_settings(make_settings, cache, f"http://127.0.0.1:{free_port()}"))
    runtime.start()
    try:
        assert runtime.ready and runtime.models.require().version == ModelStore(cache).resolve("ean", "stable")
    finally:
        runtime.stop()


def test_settings_refuse_distribution_without_a_url_or_without_mqtt(make_settings: Any) -> None:
    with pytest.raises(ValueError, match=r"distribution\.url is required"):
        make_settings(mqtt={"enabled": True}, distribution={"enabled": True})
    with pytest.raises(ValueError, match="distribution needs mqtt"):
        make_settings(distribution={"enabled": True, "url": "https://store:8500"})
