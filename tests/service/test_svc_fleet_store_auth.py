"""The central store behind a token and TLS, for real: `python -m model_store serve` with a certificate made by
openssl here, and gateways that send the token and trust only the CA they are given. A gateway without the token
is refused and says so in one line; one with it is served over TLS; a server whose certificate another CA signed
is refused; a serving gateway that the store refuses keeps serving and reports why."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness.broker import Mosquitto, Subscriber
from harness.machine import free_port, terminate, wait_until
from harness.store import copy_store, publish_copy
from model_store import ModelStore
from model_store.distribution import announcement
from service.models import ModelLoadError
from service.runtime import Runtime
from tests.service.conftest import needs_broker

REPO = Path(__file__).resolve().parents[2]
TOKEN = "store-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Issued:
    ca: Path
    cert: Path
    key: Path


def issue(where: Path, name: str) -> Issued:
    """A CA of its own, and a server certificate it signs for 127.0.0.1 and localhost."""
    where.mkdir(parents=True)
    ca_key, ca, key, csr, cert, ext = (
        where / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "ext.cnf")
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *new_key, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", f"/CN={name} CA")
    openssl("req", *new_key, "-keyout", key, "-out", csr, "-subj", "/CN=store")
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    signing = ["-CA", ca, "-CAkey", ca_key, "-set_serial", "1", "-days", "2", "-extfile", ext]
    openssl("x509", "-req", "-in", csr, *signing, "-out", cert)
    return Issued(ca, cert, key)


@dataclass(frozen=True)
class Store:
    root: Path
    url: str
    tls: Issued


@contextlib.contextmanager
def store_server(tmp_path: Path, tls: Issued) -> Iterator[Store]:
    """The real server process, as a site runs it: on every address (the tests reach it on 127.0.0.1 only), over
    HTTPS, with the token from its environment (never the command line)."""
    central = copy_store(tmp_path / "central")
    publish_copy(ModelStore(central))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")} | {"MODEL_STORE_TOKEN": TOKEN}
    log = tmp_path / "store.log"
    tls_args = ["--tls-cert", tls.cert, "--tls-key", tls.key]
    args = ["--root", central, "serve", "--host", "0.0.0.0", "--port", port, *tls_args]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "model_store", *map(str, args)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(tls.ca))
    try:
        wait_until(lambda: _get_ok(f"{url}/healthz", trust) or proc.poll() is not None, 30, 0.1, what="store up")
        assert proc.poll() is None, log.read_text()
        yield Store(central, url, tls)
    finally:
        terminate(proc, 20)
        # The token never reaches its log.
        assert TOKEN not in log.read_text()


def _get_ok(url: str, trust: ssl.SSLContext) -> bool:
    try:
        return httpx.get(url, verify=trust, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with store_server(tmp_path, issue(tmp_path / "tls", "fer-test")) as server:
        yield server


def distribution(store: Store) -> dict[str, Any]:
    """A gateway following ``store`` over TLS, quick to retry and to give up."""
    return {"enabled": True, "url": store.url, "ca_file": str(store.tls.ca), "retry_min_s": 0.1, "retry_max_s": 0.2,
            "bootstrap_timeout_s": 1}  # fmt: skip


def fleet(make_settings: Callable[..., Any], cache: Path, store: Store, **overrides: Any) -> Any:
    return make_settings(
        gateway_id="gw-a",
        mqtt={"enabled": True, "port": free_port()},  # no broker: announcements never come
        model={"store": str(cache)},
        distribution={**distribution(store), **overrides},
    )


def test_the_server_asks_every_request_but_healthz_for_the_token(store: Store) -> None:
    trust = ssl.create_default_context(cafile=str(store.tls.ca))
    with httpx.Client(base_url=store.url, verify=trust, timeout=5) as client:
        assert client.get("/healthz").status_code == 200
        for path in ("/v1/models", "/v1/models/ean", "/v1/models/ean/1/model.onnx", "/nope"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "unauthorized"
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert client.head("/v1/models/ean/1/model.onnx").status_code == 401
        assert client.post("/v1/models/ean/1/model.onnx", content=b"x").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/models", headers=auth).json() == {"models": ["ean"]}
        served = client.get("/v1/models/ean/1/model.onnx", headers=auth)
        assert served.status_code == 200 and served.headers["cache-control"].startswith("private")
        assert client.post("/v1/models/ean/1/model.onnx", headers=auth, content=b"x").status_code == 405
    # Plain HTTP gets nothing from the TLS port.
    with pytest.raises(httpx.HTTPError):
        httpx.get(store.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_a_gateway_without_the_token_is_refused_and_says_so_in_one_line(tmp_path: Path, store: Store) -> None:
    """The service as a process, with an empty cache: it cannot start, and says why, without a traceback."""
    config = {
        "gateway_id": "gw-a",
        "state_dir": str(tmp_path / "state"),
        "api": {"port": free_port()},
        "mqtt": {"port": free_port()},
        "model": {"store": str(tmp_path / "cache")},
        "distribution": distribution(store),
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
    result = subprocess.run(
        [sys.executable, "-m", "service", "--config", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = next(line for line in result.stderr.splitlines() if "cannot start" in line)
    assert f"none fetched from {store.url}" in line
    assert "HTTP 401, the store sent no token: set distribution.token (FER_DISTRIBUTION__TOKEN)" in line


def test_a_wrong_token_is_refused(tmp_path: Path, store: Store, make_settings: Callable[..., Any]) -> None:
    runtime = Runtime(fleet(make_settings, tmp_path / "cache", store, token="not-the-store-token-0000"))
    try:
        with pytest.raises(ModelLoadError, match=r"HTTP 401, the store refused distribution\.token"):
            runtime.start()
    finally:
        runtime.stop()


def test_a_gateway_with_the_token_is_served_over_tls(
    tmp_path: Path, store: Store, make_settings: Callable[..., Any]
) -> None:
    cache = tmp_path / "cache"
    runtime = Runtime(fleet(make_settings, cache, store, token=TOKEN))
    try:
        runtime.start()
        # Fetched into the empty cache: the store's stable, verified file by file, and nothing else.
        stable = ModelStore(store.root).resolve("ean", "stable")
        assert runtime.ready and runtime.models.require().version == stable
        assert ModelStore(cache).versions("ean") == [stable] and ModelStore(cache).verify("ean", stable) == []
    finally:
        runtime.stop()


def test_a_server_certificate_from_another_ca_is_refused(
    tmp_path: Path, store: Store, make_settings: Callable[..., Any]
) -> None:
    # A server on the same address with a certificate for the same names, signed by a CA the gateway does not trust.
    impostor = issue(tmp_path / "impostor", "impostor")
    settings = fleet(make_settings, tmp_path / "cache", store, token=TOKEN, ca_file=str(impostor.ca))
    runtime = Runtime(settings)
    try:
        with pytest.raises(
            ModelLoadError,
            match=r"the store's TLS certificate is not trusted \(.*\); "
            r"distribution.ca_file must be the CA that signed it",
        ):
            runtime.start()
    finally:
        runtime.stop()
    # And without a ca_file the system's CAs do not vouch for it either.
    settings = fleet(make_settings, tmp_path / "cache2", store, token=TOKEN, ca_file=None)
    runtime = Runtime(settings)
    try:
        with pytest.raises(ModelLoadError, match="certificate is not trusted"):
            runtime.start()
    finally:
        runtime.stop()


@needs_broker
def test_a_serving_gateway_that_the_store_refuses_keeps_serving_and_reports_why(
    tmp_path: Path, store: Store, broker: Mosquitto, make_settings: Callable[..., Any]
) -> None:
    settings = make_settings(
        gateway_id="gw-a",
        mqtt={"enabled": True, "port": broker.port},
        model={"store": str(copy_store(tmp_path / "cache"))},
        distribution={
            "enabled": True,
            "url": store.url,
            "ca_file": str(store.tls.ca),
            "retry_min_s": 0.2,
            "retry_max_s": 0.5,
        },
    )
    runtime = Runtime(settings)
    runtime.start()
    watch = Subscriber(broker.port, ("fer/gateways/gw-a/model",))
    try:
        wait_until(lambda: runtime.publisher.connected and watch.connected.is_set(), 10, what="connected")
        central = ModelStore(store.root)
        old, new = central.resolve("ean", "stable"), central.versions("ean")[-1]
        central.set_alias("ean", "stable", new)
        notice = announcement(central, "ean", "stable")
        watch.client.publish("fer/models/ean/stable", notice.model_dump_json().encode(), qos=1, retain=True)
        state = watch.wait_for(
            lambda ms: [m.json() for m in ms if m.json()["state"] == "retrying"], 20, what="retrying"
        )[-1]
        assert state["version"] == old and state["wanted_version"] == new
        assert "HTTP 401, the store sent no token" in state["error"]
        time.sleep(1.0)
        assert runtime.ready and runtime.models.require().version == old
        assert runtime.metrics.model_downloads.labels("failed")._value.get() >= 1
    finally:
        watch.close()
        runtime.stop()


def test_bad_distribution_settings_are_refused_with_the_key_named(
    tmp_path: Path, make_settings: Callable[..., Any]
) -> None:
    base = {"enabled": True, "url": "https://store.site.lan:8500"}
    mqtt = {"enabled": True}
    with pytest.raises(ValueError, match=r"ca_file[\s\S]*Path does not point to a file"):
        make_settings(mqtt=mqtt, distribution={**base, "ca_file": str(tmp_path / "missing.crt")})
    (tmp_path / "ca.crt").write_text("x")
    with pytest.raises(
        ValueError, match=r"ca_file verifies an https:// store server, but distribution\.url is not one"
    ):
        make_settings(mqtt=mqtt, distribution={**base, "url": "http://store:8500", "ca_file": str(tmp_path / "ca.crt")})
    # The token stays out of everything the settings print.
    settings = make_settings(mqtt=mqtt, distribution={**base, "token": TOKEN})
    assert TOKEN not in settings.model_dump_json() and TOKEN not in repr(settings)
