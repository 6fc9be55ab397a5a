"""The gateway's side of model distribution in one process, against a real broker and a real store
server: a malformed announcement is ignored, a corrupt cached copy is fetched again, and the store's
announcer re-announces after the broker lost its retained messages."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from harness.broker import Mosquitto, Subscriber
from harness.machine import wait_until
from harness.store import copy_store, publish_copy
from model_store import ModelStore
from model_store.distribution import Announcer, StoreHTTPServer, announcement
from service.config import DistributionConfig, ModelConfig, MqttConfig
from service.fleet.sync import ModelSync
from service.metrics import Metrics
from service.models import ModelLoadError, ModelManager
from service.runtime import Runtime
from tests.service.conftest import needs_broker

pytestmark = needs_broker


@pytest.fixture
def central(tmp_path: Path) -> Iterator[tuple[ModelStore, str]]:
    store = ModelStore(copy_store(tmp_path / "central"))
    publish_copy(store)
    server = StoreHTTPServer(store, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield store, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_bad_announcements_are_ignored_and_a_corrupt_cached_copy_is_fetched_again(
    tmp_path: Path, broker: Mosquitto, central: tuple[ModelStore, str], make_settings: Any
) -> None:
    store, url = central
    # The cache already holds the stable version and a copy of the central store's new one, whose model
    # file rotted on disk.
    cache = copy_store(tmp_path / "cache")
    cache_store = ModelStore(cache)
    old, new = cache_store.resolve("ean", "stable"), store.versions("ean")[-1]
    assert publish_copy(cache_store) == new
    rotten = cache / "ean" / str(new) / "model.onnx"
    rotten.chmod(0o644)
    rotten.write_bytes(b"\0" + rotten.read_bytes()[1:])
    settings = make_settings(
        gateway_id="gw-a",
        mqtt={"enabled": True, "port": broker.port},
        model={"store": str(cache), "watch_interval_s": 0.2},
        distribution={"enabled": True, "url": url, "retry_min_s": 0.2, "retry_max_s": 0.5},
    )
    runtime = Runtime(settings)
    runtime.start()
    pub = Subscriber(broker.port, ("fer/gateways/gw-a/model",))
    try:
        wait_until(lambda: runtime.publisher.connected and pub.connected.is_set(), 10, what="connected")
        pub.client.publish("fer/models/ean/stable", b"{not json", qos=1, retain=True).wait_for_publish(5)
        wrong = announcement(store, "ean", "stable").model_copy(update={"name": "other"})
        pub.client.publish("fer/models/ean/stable", wrong.model_dump_json().encode(), qos=1).wait_for_publish(5)
        pub.client.publish("fer/models/ean/candidate", b"", qos=1, retain=True).wait_for_publish(5)
        threading.Event().wait(1.0)
        assert runtime.models.require().version == old
        assert runtime.sync is not None and runtime.sync.target() is None

        store.set_alias("ean", "stable", new)
        notice = announcement(store, "ean", "stable")
        pub.client.publish("fer/models/ean/stable", notice.model_dump_json().encode(), qos=1, retain=True)
        wait_until(lambda: runtime.models.require().version == new, 20, what="the new version served")
        assert cache_store.verify("ean", new) == []
        state = pub.wait_for(lambda ms: [m for m in ms if m.json()["state"] == "serving"
                                         and m.json()["version"] == new])  # fmt: skip
        assert state[-1].json()["gateway"] == "gw-a"
        assert runtime.metrics.model_downloads.labels("ok")._value.get() == 1
    finally:
        pub.close()
        runtime.stop()


def test_the_announcer_announces_again_after_the_broker_lost_its_retained_messages(
    tmp_path: Path, central: tuple[ModelStore, str]
) -> None:
    store, _ = central
    old, new = store.resolve("ean", "stable"), store.versions("ean")[-1]
    broker = Mosquitto(tmp_path / "broker").start()  # persistence off: a restart forgets everything
    announcer = Announcer(store, "127.0.0.1", broker.port, poll_s=0.2)
    announcer.start()
    try:
        first = Subscriber(broker.port, ("fer/models/#",))
        got = first.wait_for(lambda ms: {m.topic for m in ms} >= {"fer/models/ean/stable", "fer/models/ean/candidate"}
                             and ms, what="both aliases")  # fmt: skip
        assert {m.topic: m.json()["version"] for m in got} == {"fer/models/ean/stable": old,
                                                                "fer/models/ean/candidate": old}  # fmt: skip
        store.set_alias("ean", "candidate", new, ["gw-b"])
        first.wait_for(lambda ms: [m for m in first.snapshot("fer/models/ean/candidate") if m.json()["version"] == new],
                       what="the new candidate announced")  # fmt: skip
        first.close()
        broker.kill()
        broker.start()
        late = Subscriber(broker.port, ("fer/models/ean/candidate", "fer/models/ean/stable"))
        # Live or retained, depending on who reconnects first; only a re-announcement can bring them.
        got = late.wait_for(lambda ms: len({m.topic for m in ms}) == 2 and ms, 20, what="re-announced aliases")
        notice = [m for m in got if m.topic.endswith("candidate")][-1].json()
        assert notice["version"] == new and notice["gateways"] == ["gw-b"]
        assert notice["sha256"] == store.manifest("ean", new).files["model.onnx"].sha256
        late.close()
    finally:
        announcer.stop()
        broker.kill()


def test_a_store_whose_index_is_not_one_fails_the_first_fetch_in_one_line(tmp_path: Path) -> None:
    """A server that answers the index with JSON of another shape: the empty cache's first fetch gives
    up with the reason, instead of a KeyError from deep inside."""

    class Liar(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"name": "ean", "aliases": {"stable": {"gateways": []}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "cache").mkdir()
        model_cfg = ModelConfig(store=tmp_path / "cache")
        cfg = DistributionConfig(enabled=True, url=f"http://127.0.0.1:{server.server_address[1]}",
                                 bootstrap_timeout_s=0, retry_min_s=0.1, retry_max_s=0.1)
        sync = ModelSync(cfg, model_cfg, None, ModelManager(model_cfg), Metrics(CollectorRegistry()))
        with pytest.raises(ModelLoadError, match=r"not the store's index \(Field required\)"):
            sync.bootstrap()
    finally:
        server.shutdown()
        server.server_close()


def test_downloads_are_capped_by_the_settings_and_by_the_manifest(
    tmp_path: Path, central: tuple[ModelStore, str]
) -> None:
    """The review: a gateway downloaded without a size cap, so a store (or whoever answers as one) could
    fill its disk. A file past distribution.max_file_bytes is refused before it is fetched, and a
    server that sends more than the manifest says is cut off at that size."""
    _, url = central

    def bootstrap(store_url: str, **cfg: Any) -> Path:
        cache = tmp_path / f"cache-{len(list(tmp_path.iterdir()))}"
        cache.mkdir()
        model_cfg = ModelConfig(store=cache)
        dist = DistributionConfig(enabled=True, url=store_url, bootstrap_timeout_s=0, retry_min_s=0.1,
                                  retry_max_s=0.1, **cfg)  # fmt: skip
        ModelSync(dist, model_cfg, None, ModelManager(model_cfg), Metrics(CollectorRegistry())).bootstrap()
        return cache

    with pytest.raises(ModelLoadError, match=r"model\.onnx is \d+ bytes, past distribution\.max_file_bytes \(1024\)"):
        bootstrap(url, max_file_bytes=1024)

    sent: list[int] = []

    class Flood(http.server.BaseHTTPRequestHandler):
        """The real store's index and manifests; for any other file, 64 MB of zeros."""

        def do_GET(self) -> None:
            if self.path.endswith(".json") or self.path.count("/") == 3:
                with urllib.request.urlopen(url + self.path) as real:
                    body = real.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(64 << 20))
            self.end_headers()
            try:
                for _ in range(1024):
                    self.wfile.write(bytes(64 << 10))
                    sent.append(64 << 10)
            except OSError:
                pass  # the gateway hung up

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flood)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ModelLoadError, match=r"sent more than the manifest's \d+ bytes"):
            bootstrap(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    # What reached the gateway's disk: nothing kept, not one file of the flood.
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size > 2 << 20]


def test_plain_http_to_another_host_is_refused_unless_allowed() -> None:
    with pytest.raises(ValueError, match=r"plain http:// to another host[\s\S]*distribution\.allow_http"):
        DistributionConfig(enabled=True, url="http://store.lan:8500")
    assert DistributionConfig(enabled=True, url="http://store.lan:8500", allow_http=True).allow_http
    assert DistributionConfig(enabled=True, url="http://127.0.0.1:8500").url  # one machine: a trial
    assert DistributionConfig(enabled=True, url="https://store.lan:8500").url


def test_an_empty_cache_checks_its_first_download_against_the_retained_announcement(
    tmp_path: Path, broker: Mosquitto, central: tuple[ModelStore, str]
) -> None:
    """The review: the first download into an empty cache checked no digest, so whoever answered as the
    store chose the gateway's first model. The broker's retained announcement now gives the digests."""
    store, url = central
    notice = announcement(store, "ean", "stable")
    retainer = Subscriber(broker.port, ("fer/none",))
    retainer.connected.wait(5)
    retainer.client.publish("fer/models/ean/stable", notice.model_dump_json().encode(), qos=1,
                            retain=True).wait_for_publish(5)  # fmt: skip
    retainer.close()

    class Tamper(http.server.BaseHTTPRequestHandler):
        """The real store's answers, but every manifest re-serialised: the same content, other bytes."""

        def do_GET(self) -> None:
            with urllib.request.urlopen(url + self.path) as real:
                body = real.read()
            if self.path.endswith("/manifest.json"):
                body = json.dumps(json.loads(body), indent=1).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    def bootstrap(store_url: str, mqtt: MqttConfig | None) -> ModelStore:
        cache = tmp_path / f"cache-{len(list(tmp_path.iterdir()))}"
        cache.mkdir()
        model_cfg = ModelConfig(store=cache)
        dist = DistributionConfig(enabled=True, url=store_url, bootstrap_timeout_s=0, retry_min_s=0.1,
                                  retry_max_s=0.1)  # fmt: skip
        ModelSync(dist, model_cfg, None, ModelManager(model_cfg), Metrics(CollectorRegistry()), mqtt).bootstrap()
        return ModelStore(cache)

    mqtt = MqttConfig(port=broker.port)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tamper)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tampered = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(ModelLoadError, match=r"manifest\.json sha256 does not match the announcement"):
            bootstrap(tampered, mqtt)
        # Without a broker to ask, the first answer is all there is: taken, and logged so.
        assert bootstrap(tampered, None).resolve("ean", "stable") == notice.version
    finally:
        server.shutdown()
        server.server_close()
    # The real store passes the same check, and the announced version is the one fetched.
    cache = bootstrap(url, mqtt)
    assert cache.resolve("ean", "stable") == notice.version and cache.verify("ean", notice.version) == []

