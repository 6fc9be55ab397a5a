"""Follow the central model store: download, verify, warm and swap on this gateway's own (docs/fleet.md).

The central store announces each alias, retained, on ``<prefix>/models/<name>/<alias>``. This
gateway follows ``stable``, or ``candidate`` while it is one of the gateways that alias names and
it is ahead of ``stable`` (a staged rollout). A new version is fetched over HTTP into a staging
directory of the local cache store and checked link by link: the announcement's manifest sha256,
the manifest's own version and model-file sha256, then every file's size and sha256. Only then is
it installed into the cache under its central number, the cache's served alias moved, and the
model manager asked to load, warm and swap it. Any failure leaves the current version serving and
is retried with exponential backoff; a newer announcement cuts the wait short.

Every request carries ``distribution.token`` as a bearer token, and an ``https://`` store must
present a certificate that chains to ``distribution.ca_file`` (the system's CAs when unset). A
refused token or certificate is told in words, in the log and in the retained model state.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import logging
import random
import shutil
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pydantic import ValidationError

from model_store import MANIFEST_FILE, Manifest, StoreError, sha256_file
from model_store.addresses import IndexBody, announcement_topic, file_path, is_loopback_host, model_path
from model_store.distribution import Announcement
from service.comms.base import Publisher
from service.comms.mqtt import make_client
from service.comms.payloads import GatewayModel
from service.config import DistributionConfig, ModelConfig, MqttConfig
from service.metrics import Metrics
from service.models import ModelLoadError, ModelManager

logger = logging.getLogger(__name__)

ALIASES = ("stable", "candidate")
_CHUNK = 1 << 16
# How long an empty cache's first fetch waits for the broker's retained announcements: the only
# digests it can check the store's first answer against. A broker answers a subscription with what
# it retains at once, so this is spent only when the broker is unreachable.
ANNOUNCEMENT_WAIT_S = 5.0


class SyncError(Exception):
    """A version could not be taken; ``refused`` when it failed verification, not the network."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


# An index or a manifest is a few KB; a server that sends more is not a store.
MAX_JSON_BYTES = 1 << 20


class ModelSync:
    def __init__(
        self,
        cfg: DistributionConfig,
        model_cfg: ModelConfig,
        gateway_id: str | None,
        manager: ModelManager,
        metrics: Metrics,
        mqtt: MqttConfig | None = None,
    ) -> None:
        assert cfg.url is not None
        self.cfg = cfg
        self.mqtt = mqtt
        self.name = model_cfg.name
        self.alias = model_cfg.alias
        self.gateway_id = gateway_id
        self.manager = manager
        self.cache = manager.store
        self.metrics = metrics
        self.base_url = cfg.url.rstrip("/")
        split = urllib.parse.urlsplit(self.base_url)
        if split.scheme == "http" and not is_loopback_host(split.hostname or ""):
            # Only with distribution.allow_http: the settings refuse it otherwise.
            logger.warning(
                "distribution.url is plain http to another host (distribution.allow_http): the token and the models "
                "cross the network unencrypted and the store is not authenticated"
            )
        # Built at start-up (bootstrap), so that an unreadable ca_file stops the start in one line.
        self._tls: ssl.SSLContext | None = None
        self.publisher: Publisher | None = None
        self._announced: dict[str, Announcement | None] = dict.fromkeys(ALIASES)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state: GatewayModel | None = None

    # -- announcements ---------------------------------------------------------------------------

    def attach(self, publisher: Publisher) -> None:
        """Subscribe through the service's own connection (call before it starts)."""
        self.publisher = publisher
        for alias in ALIASES:
            topic = publisher.topics.model_alias(self.name, alias)
            publisher.subscribe(topic, functools.partial(self._on_announcement, alias))

    def _on_announcement(self, alias: str, topic: str, payload: bytes) -> None:
        notice: Announcement | None = None
        if payload:  # an empty retained payload withdraws the alias
            try:
                notice = Announcement.model_validate_json(payload)
            except ValidationError:
                logger.warning("ignoring a malformed %s announcement for %s", alias, self.name)
                return
            if notice.name != self.name or notice.alias != alias:
                logger.warning("ignoring an announcement for %s:%s on the %s topic", notice.name, notice.alias, alias)
                return
        with self._lock:
            self._announced[alias] = notice
        self._wake.set()

    def target(self) -> Announcement | None:
        """The announcement this gateway should serve now."""
        with self._lock:
            stable, candidate = self._announced["stable"], self._announced["candidate"]
        if (
            candidate is not None
            and self.gateway_id is not None
            and self.gateway_id in (candidate.gateways or [])
            and (stable is None or candidate.version > stable.version)
        ):
            return candidate
        return stable

    # -- start-up --------------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            ca_file = self.cfg.ca_file
            try:
                self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except OSError as exc:  # ssl.SSLError included
                raise ModelLoadError(f"distribution.ca_file {ca_file}: not a PEM CA certificate ({exc})") from None
        return self._tls

    def bootstrap(self, client_id: str = "fer-edge") -> None:
        """With nothing in the cache, fetch what the store's aliases name now; raises ModelLoadError.

        The version and digests come from the broker's retained announcement when there is one, so
        that the first download is checked as every later one is; the store's index is used only when
        no announcement arrives, and then the first answer is trusted as served (and logged so)."""
        self._tls_context()
        try:
            self.cache.resolve(self.name, self.alias)
            return
        except StoreError:
            pass
        announced = self._retained_announcements(client_id)
        if not announced:
            logger.warning("no %s announcement from the broker: the first model is taken as the store serves it, "
                           "with no digest to check it against", self.name)  # fmt: skip
        deadline = time.monotonic() + self.cfg.bootstrap_timeout_s
        attempt = 0
        while True:
            try:
                version, alias, digests = self._first_target(announced)
                self._install(version, *digests)
                self.cache.set_alias(self.name, self.alias, version)
                logger.info("fetched %s v%s (%s) into the empty cache", self.name, version, alias)
                return
            except (SyncError, StoreError) as exc:
                attempt += 1
                delay = self._backoff(attempt)
                if time.monotonic() + delay > deadline:
                    raise ModelLoadError(f"no model in the cache, none fetched from {self.base_url}: {exc}") from None
                logger.warning("cannot fetch a first model yet (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)

    def _first_target(self, announced: dict[str, Announcement]) -> tuple[int, str, tuple[str | None, str | None]]:
        """The version to fetch first, its alias and the digests to check it against."""
        if announced:
            with self._lock:
                self._announced.update(announced)
            target = self.target()
            if target is not None:
                return target.version, target.alias, (target.manifest_sha256, target.sha256)
        try:
            index = IndexBody.model_validate(self._get_json(model_path(self.name)))
        except ValidationError as exc:
            raise SyncError(f"GET {model_path(self.name)}: not the store's index "
                            f"({exc.errors()[0]['msg']})") from None  # fmt: skip
        stable, candidate = index.aliases.get("stable"), index.aliases.get("candidate")
        if stable is None:
            raise SyncError(f"the central store has no {self.name}:stable")
        entry, alias = stable, "stable"
        if (candidate is not None and self.gateway_id in (candidate.gateways or [])
                and candidate.version > stable.version):  # fmt: skip
            entry, alias = candidate, "candidate"
        return entry.version, alias, (None, None)

    def _retained_announcements(self, client_id: str) -> dict[str, Announcement]:
        """What the broker retains for each alias, read with a short-lived client of its own (the
        service's connection does not exist yet); empty without MQTT or when the broker is away."""
        if self.mqtt is None:
            return {}
        topics = {announcement_topic(self.mqtt.prefix, self.name, alias): alias for alias in ALIASES}
        found: dict[str, Announcement] = {}
        subscribed = threading.Event()
        client = make_client(self.mqtt, f"{client_id}-bootstrap")

        def on_connect(c: object, userdata: object, flags: object, reason: object, props: object) -> None:
            client.subscribe([(topic, 1) for topic in topics])

        def on_subscribe(c: object, userdata: object, mid: object, reasons: object, props: object) -> None:
            subscribed.set()

        def on_message(c: object, userdata: object, msg: object) -> None:
            topic, payload = msg.topic, msg.payload  # type: ignore[attr-defined]
            with contextlib.suppress(ValidationError):
                notice = Announcement.model_validate_json(payload)
                if notice.name == self.name and notice.alias == topics.get(topic):
                    found[notice.alias] = notice

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        try:
            client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
            client.loop_start()
            if subscribed.wait(ANNOUNCEMENT_WAIT_S):
                # Retained messages follow the SUBACK closely, not always before it: a moment more.
                time.sleep(0.5)
        finally:
            client.disconnect()
            client.loop_stop()
        return found

    # -- the loop --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        attempt = 0
        last_target: tuple[int, str] | None = None
        while not self._stop.is_set():
            self._wake.clear()
            target = self.target()
            if target is None:
                self._wake.wait()
                continue
            self.metrics.model_wanted_version.set(target.version)
            key = (target.version, target.sha256)
            if key != last_target:
                attempt, last_target = 0, key
            served = self.manager.current
            if served is not None and served.version == target.version:
                self._report(target, "serving")
                attempt = 0
                self._wake.wait()
                continue
            try:
                self._report(target, "downloading")
                self._take(target)
                self.metrics.model_downloads.labels("ok").inc()
                self._report(target, "serving")
                attempt = 0
            except SyncError as exc:
                attempt += 1
                delay = self._backoff(attempt)
                self.metrics.model_downloads.labels("refused" if exc.refused else "failed").inc()
                logger.error("%s v%s %s; still serving v%s, retry %d in %.1f s", self.name, target.version,
                             exc, served.version if served else None, attempt, delay)  # fmt: skip
                self._report(target, "retrying", str(exc))
                self._wake.wait(delay)
            except Exception as exc:  # never let the loop die: the gateway must keep following
                logger.exception("model sync failed")
                self._report(target, "retrying", f"internal error: {exc}")
                self._wake.wait(self.cfg.retry_max_s)

    def _backoff(self, attempt: int) -> float:
        base = min(self.cfg.retry_max_s, self.cfg.retry_min_s * 2 ** (attempt - 1))
        # Jitter, so that a fleet refused at once does not come back at once.
        return base * random.uniform(0.8, 1.0)

    def _take(self, target: Announcement) -> None:
        try:
            self._install(target.version, target.manifest_sha256, target.sha256)
            self.cache.set_alias(self.name, self.alias, target.version)
        except StoreError as exc:
            raise SyncError(str(exc)) from None
        result = self.manager.check(force=True)
        if result.result == "failed":
            raise SyncError(f"cannot be served: {result.error}", refused=True)

    def _report(self, target: Announcement, state: str, error: str | None = None) -> None:
        served = self.manager.current
        self.state = GatewayModel(
            name=self.name,
            version=served.version if served else None,
            sha256=served.sha256 if served else None,
            wanted_version=target.version,
            alias=target.alias,
            state=state,
            error=error,
            timestamp=time.time(),
        )
        if self.publisher is not None:
            self.publisher.set_model_state(self.state)

    # -- fetching --------------------------------------------------------------------------------

    def _install(self, version: int, manifest_sha256: str | None, model_sha256: str | None) -> None:
        """Put ``version`` into the cache, verified; the expected digests come from the announcement."""
        if version in self._cached_versions():
            problems = self.cache.verify(self.name, version)
            cached = self.cache.version_dir(self.name, version) / MANIFEST_FILE
            if not problems and (manifest_sha256 is None or sha256_file(cached) == manifest_sha256):
                return
            # Ours to repair: the cache is not the source of truth.
            logger.warning("cached %s v%s does not match (%s); fetching it again", self.name, version,
                           "; ".join(problems) or "another manifest")  # fmt: skip
            shutil.rmtree(self.cache.version_dir(self.name, version))
        staged = self.cache.staging_dir(self.name)
        try:
            raw = self._get_bytes(file_path(self.name, version, MANIFEST_FILE))
            digest = hashlib.sha256(raw).hexdigest()
            if manifest_sha256 is not None and digest != manifest_sha256:
                raise SyncError("refused: manifest.json sha256 does not match the announcement", refused=True)
            try:
                manifest = Manifest.model_validate_json(raw)
            except ValidationError:
                raise SyncError("refused: manifest.json is not a valid manifest", refused=True) from None
            if manifest.name != self.name or manifest.version != version:
                raise SyncError(f"refused: manifest is {manifest.name} v{manifest.version}", refused=True)
            model_entry = manifest.files.get(manifest.model_file)
            if model_entry is None or (model_sha256 is not None and model_entry.sha256 != model_sha256):
                raise SyncError(f"refused: {manifest.model_file} sha256 differs from the announcement", refused=True)
            (staged / MANIFEST_FILE).write_bytes(raw)
            for fname, entry in manifest.files.items():
                if "/" in fname or fname.startswith("."):
                    raise SyncError(f"refused: file name {fname!r}", refused=True)
                if entry.size > self.cfg.max_file_bytes:
                    raise SyncError(f"refused: {fname} is {entry.size} bytes, past distribution.max_file_bytes "
                                    f"({self.cfg.max_file_bytes})", refused=True)  # fmt: skip
                size, sha = self._download(file_path(self.name, version, fname), staged / fname, entry.size)
                if size != entry.size or sha != entry.sha256:
                    raise SyncError(f"refused: downloaded {fname} fails verification (sha256 mismatch, "
                                    f"{size} bytes of {entry.size})", refused=True)  # fmt: skip
            self.cache.install(self.name, version, staged)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise

    def _cached_versions(self) -> list[int]:
        try:
            return self.cache.versions(self.name)
        except StoreError:  # the model's directory does not exist in an empty cache
            return []

    def _open(self, path: str) -> http.client.HTTPResponse:
        request = urllib.request.Request(self.base_url + path)
        if self.cfg.token is not None:
            # Unredirected: a redirect to another host must not carry the token there.
            request.add_unredirected_header("Authorization", f"Bearer {self.cfg.token.get_secret_value()}")
        try:
            return urllib.request.urlopen(request, timeout=self.cfg.timeout_s, context=self._tls_context())
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 401:
                why = ("sent no token: set distribution.token (FER_DISTRIBUTION__TOKEN)" if self.cfg.token is None
                       else "refused distribution.token")  # fmt: skip
                raise SyncError(f"GET {path}: HTTP 401, the store {why}") from None
            raise SyncError(f"GET {path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise SyncError(
                    f"GET {path}: the store's TLS certificate is not trusted ({reason.verify_message}); "
                    "distribution.ca_file must be the CA that signed it, for the url's host"
                ) from None
            raise SyncError(f"GET {path}: {reason}") from None

    def _get_bytes(self, path: str) -> bytes:
        """A manifest or an index: JSON of a few KB, read up to MAX_JSON_BYTES and refused past it."""
        with self._open(path) as resp:
            try:
                raw = resp.read(MAX_JSON_BYTES + 1)
            except OSError as exc:
                raise SyncError(f"GET {path}: {exc}") from None
        if len(raw) > MAX_JSON_BYTES:
            raise SyncError(f"refused: GET {path} answered more than {MAX_JSON_BYTES} bytes", refused=True)
        return raw

    def _get_json(self, path: str) -> dict:
        try:
            data = json.loads(self._get_bytes(path))
        except ValueError:
            raise SyncError(f"GET {path}: not JSON") from None
        if not isinstance(data, dict):
            raise SyncError(f"GET {path}: not a JSON object")
        return data

    def _download(self, path: str, dst: Path, expected: int) -> tuple[int, str]:
        """The file's size and sha256; a server that sends more than the manifest's ``expected`` bytes is
        cut off there, so it cannot fill the gateway's disk."""
        digest, size = hashlib.sha256(), 0
        with self._open(path) as resp, open(dst, "wb") as out:
            try:
                while chunk := resp.read(min(_CHUNK, expected - size + 1)):
                    digest.update(chunk)
                    size += len(chunk)
                    if size > expected:
                        raise SyncError(f"refused: GET {path} sent more than the manifest's {expected} bytes",
                                        refused=True)  # fmt: skip
                    out.write(chunk)
            except OSError as exc:
                raise SyncError(f"GET {path}: {exc}") from None
        return size, digest.hexdigest()
