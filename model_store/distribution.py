"""A store shared by a fleet: served read-only over HTTP, its aliases announced over MQTT (docs/fleet.md).

``python -m model_store serve`` runs both. The HTTP side serves the store's own layout, each file
with its sha256 as ETag, so a gateway (or any HTTP cache between) can check and skip what it has
(``model_store.addresses`` defines the paths):

- ``GET /v1/models`` and ``GET /v1/models/<name>``: names, versions and aliases, as JSON;
- ``GET /v1/models/<name>/<version>/<file>``: ``manifest.json`` or a file the manifest lists.

Nothing else is reachable (no directory listing, no path outside those), and every method but GET
and HEAD is refused: the store is written by ``python -m model_store publish/promote`` on its host.

With a token (:class:`ServerSecurity`) every path but ``/healthz`` needs ``Authorization: Bearer
<token>`` and answers a typed 401 without it; with a certificate and key it speaks HTTPS only. Off
loopback it refuses to start without both, unless told ``insecure``: a gateway trusts what this
server says, so anyone who can answer in its place, or read what it serves, must be kept out.

The MQTT side publishes one retained :class:`Announcement` per alias on
``<prefix>/models/<name>/<alias>`` (``addresses.announcement_topic``) whenever the alias moves (and
after every reconnect), so a gateway that starts later still learns the current version from the broker.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, ValidationError, model_validator

from model_store.addresses import (
    MODELS_PATH,
    AliasEntry,
    IndexBody,
    ModelIndex,
    VersionFile,
    announcement_topic,
    is_loopback_host,
    parse_path,
)
from model_store.manifest import MANIFEST_FILE
from model_store.store import ModelStore, StoreError, sha256_file

logger = logging.getLogger("model_store.serve")

ANNOUNCEMENT_SCHEMA_VERSION = 1
_CHUNK = 1 << 16
# Long enough that guessing is hopeless even without a rate limit; `secrets.token_urlsafe(32)` gives 43.
MIN_TOKEN_CHARS = 16
# A client that has not finished its TLS handshake by then is dropped, so it holds one thread, briefly.
HANDSHAKE_TIMEOUT_S = 10.0
# An idle keep-alive connection is closed after this, for the same reason.
IDLE_TIMEOUT_S = 60.0
# Connections served at once, each a thread: past this a new one is closed at once. Without a cap,
# 200 connections trickling header lines kept 202 threads alive. Gateways fetch a version once, so
# a fleet rarely holds more than a few at a time.
MAX_CONNECTIONS = 64
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="fer-model-store"', "Connection": "close"}


class ServerConfigError(ValueError):
    """``serve`` cannot start as asked; the message is one line that names the option."""


class ServerSecurity(BaseModel):
    """What guards the store server: a bearer token, and TLS from a certificate and key given by path."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    token: SecretStr | None = Field(None, description="every path but /healthz needs it as a bearer token")
    tls_cert: FilePath | None = Field(None, description="PEM certificate (chain) the server presents")
    tls_key: FilePath | None = Field(None, description="PEM private key of tls_cert")

    @model_validator(mode="after")
    def _checks(self) -> ServerSecurity:
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("a TLS key without a certificate: give --tls-cert too")
        if self.tls_cert is not None and self.tls_key is None:
            raise ValueError("a TLS certificate without its key: give --tls-key too")
        if self.token is not None and len(self.token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"the token is shorter than {MIN_TOKEN_CHARS} characters; make one with "
                             "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")  # fmt: skip
        return self

    @classmethod
    def from_options(
        cls, *, token: str | None, token_file: Path | None, tls_cert: Path | None, tls_key: Path | None
    ) -> ServerSecurity:
        """From the command line's options and the environment's token; raises ServerConfigError."""
        if token is not None and token_file is not None:
            raise ServerConfigError("the token is given twice: MODEL_STORE_TOKEN and --token-file; keep one")
        if token_file is not None:
            try:
                lines = token_file.read_text().splitlines()
            except OSError as exc:
                raise ServerConfigError(f"--token-file {token_file}: {exc.strerror or exc}") from None
            token = lines[0].strip() if lines else ""
            if not token:
                raise ServerConfigError(f"--token-file {token_file}: the first line is empty")
        try:
            return cls(token=token or None, tls_cert=tls_cert, tls_key=tls_key)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else ""
            message = "no such file" if error["type"] == "path_not_file" else str(error["msg"])
            message = message.removeprefix("Value error, ")
            if field == "tls_cert":
                message = f"--tls-cert {tls_cert}: {message}"
            elif field == "tls_key":
                message = f"--tls-key {tls_key}: {message}"
            raise ServerConfigError(message) from None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except OSError as exc:  # ssl.SSLError included
            raise ServerConfigError(
                f"--tls-cert {self.tls_cert} / --tls-key {self.tls_key}: cannot load them "
                f"({getattr(exc, 'reason', None) or exc}): a PEM certificate and its own private key, unencrypted"
            ) from None
        return context


def check_exposure(host: str, security: ServerSecurity, insecure: bool) -> None:
    """Off loopback, a token and TLS, or the explicit ``insecure``; raises ServerConfigError."""
    if insecure or is_loopback_host(host):
        return
    missing = []
    if security.token is None:
        missing.append("a token (MODEL_STORE_TOKEN or --token-file)")
    if security.tls_cert is None:
        missing.append("TLS (--tls-cert and --tls-key)")
    if missing:
        raise ServerConfigError(f"serving on {host} needs {' and '.join(missing)}: any host that reaches it could read "
                                "every model, and gateways could not tell it from an impostor. --insecure serves "
                                "without, for a trial on a trusted network")  # fmt: skip


class Announcement(BaseModel):
    """Retained on ``<prefix>/models/<name>/<alias>``: which version an alias names, and how to check it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = ANNOUNCEMENT_SCHEMA_VERSION
    name: str
    alias: str
    version: int
    model_file: str
    sha256: str = Field(description="of the model file")
    manifest_sha256: str = Field(description="of manifest.json, which holds every file's sha256")
    gateways: list[str] | None = Field(None, description="only these gateways take it (staged rollout); null: all")
    timestamp: float


def announcement(store: ModelStore, name: str, alias: str) -> Announcement:
    version = store.resolve(name, alias)
    manifest = store.manifest(name, version)
    entry = manifest.files.get(manifest.model_file)
    if entry is None:
        raise StoreError(f"{name} v{version}: {manifest.model_file} is not listed in the manifest")
    return Announcement(
        name=name,
        alias=alias,
        version=version,
        model_file=manifest.model_file,
        sha256=entry.sha256,
        manifest_sha256=sha256_file(store.version_dir(name, version) / MANIFEST_FILE),
        gateways=store.alias_gateways(name).get(alias),
        timestamp=time.time(),
    )


# -- HTTP -----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: StoreHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "fer-model-store"
    timeout = IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _authorized(self) -> bool:
        """True, or a 401 has been sent: every path but /healthz needs the token when one is set."""
        token = self.server.token
        if token is None or self.path.split("?", 1)[0] == "/healthz":
            return True
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            if hmac.compare_digest(given.strip().encode(), token):
                return True
            logger.warning("refused %s %s from %s: wrong bearer token", self.command, self.path.split("?", 1)[0],
                           self.client_address[0])  # fmt: skip
            self._error(HTTPStatus.UNAUTHORIZED, "unauthorized", "invalid bearer token", _CHALLENGE)
        else:
            self._error(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing bearer token: send Authorization: Bearer "
                        "<token> (a gateway's distribution.token)", _CHALLENGE)  # fmt: skip
        return False

    def _refuse_method(self) -> None:
        if not self._authorized():
            return
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", "the store is read-only: GET and HEAD only",
                    {"Allow": "GET, HEAD"})  # fmt: skip

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method

    def _serve(self, *, body: bool) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        store = self.server.store
        target = parse_path(path)
        try:
            if path == "/healthz":
                self._json({"status": "ok"}, body=body)
            elif path == MODELS_PATH:
                self._json({"models": store.models()}, body=body)
            elif isinstance(target, ModelIndex):
                name = target.name
                versions = store.versions(name)
                gateways = store.alias_gateways(name)
                aliases = {a: AliasEntry(version=v, gateways=gateways.get(a)) for a, v in store.aliases(name).items()}
                self._json(IndexBody(name=name, versions=versions, aliases=aliases).model_dump(), body=body)
            elif isinstance(target, VersionFile):
                self._file(target.name, target.version, target.file, body=body)
            else:
                self._error(HTTPStatus.NOT_FOUND, "not_found", f"no such path {path!r}")
        except StoreError as exc:
            self._error(HTTPStatus.NOT_FOUND, "not_found", str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _file(self, name: str, version: int, fname: str, *, body: bool) -> None:
        store = self.server.store
        vdir = store.version_dir(name, version)
        if fname == MANIFEST_FILE:
            digest = sha256_file(vdir / MANIFEST_FILE)
            ctype = "application/json"
        else:
            entry = store.manifest(name, version).files.get(fname)
            if entry is None:
                raise StoreError(f"{name} v{version} has no file {fname!r}")
            digest, ctype = entry.sha256, "application/octet-stream"
        path = vdir / fname
        if not path.is_file():
            raise StoreError(f"{name} v{version}: {fname} is missing from the store")
        # A version directory is immutable, so its files may be cached for good; by shared caches too,
        # unless they are only for those who hold the token.
        scope = "private" if self.server.token is not None else "public"
        headers = {"Cache-Control": f"{scope}, max-age=31536000, immutable", "X-Checksum-Sha256": digest}
        if self._not_modified(digest, headers):
            return
        size = path.stat().st_size
        self._head(HTTPStatus.OK, ctype, size, digest, headers)
        if body:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    self.wfile.write(chunk)

    def _json(self, data: Any, *, body: bool) -> None:
        raw = json.dumps(data, sort_keys=True).encode()
        digest = hashlib.sha256(raw).hexdigest()
        headers = {"Cache-Control": "no-cache"}
        if self._not_modified(digest, headers):
            return
        self._head(HTTPStatus.OK, "application/json", len(raw), digest, headers)
        if body:
            self.wfile.write(raw)

    def _not_modified(self, digest: str, headers: dict[str, str]) -> bool:
        wanted = [t.strip().removeprefix("W/").strip('"') for t in self.headers.get("If-None-Match", "").split(",")]
        if digest not in wanted and "*" not in wanted:
            return False
        self.send_response(HTTPStatus.NOT_MODIFIED)
        self.send_header("ETag", f'"{digest}"')
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _head(self, status: HTTPStatus, ctype: str, length: int, digest: str | None, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        if digest is not None:
            self.send_header("ETag", f'"{digest}"')
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _error(self, status: HTTPStatus, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._head(status, "application/json", len(raw), None, headers or {})
        if self.command != "HEAD":
            self.wfile.write(raw)


class StoreHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        store: ModelStore,
        host: str,
        port: int,
        security: ServerSecurity | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.store = store
        security = security or ServerSecurity()
        self.token = security.token.get_secret_value().encode() if security.token is not None else None
        self.tls = security.ssl_context()
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            logger.warning("refused a connection from %s: %d connections open already", client_address[0],
                           self.max_connections)  # fmt: skip
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # The handshake runs here, in the connection's own thread, not in accept(): a client that
        # connects and says nothing would otherwise hold up every other one.
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except OSError as exc:  # ssl.SSLError included: plain HTTP, an untrusting client, a timeout
            logger.info("TLS handshake with %s failed: %s", client_address[0], getattr(exc, "reason", None) or exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


# -- MQTT -----------------------------------------------------------------------------------------


class Announcer:
    """Publishes every alias of every model, retained, when it changes and after each (re)connect."""

    def __init__(
        self,
        store: ModelStore,
        host: str,
        port: int,
        *,
        prefix: str = "fer",
        poll_s: float = 1.0,
        client_id: str = "fer-model-store",
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt  # the service extra; only a store that announces needs it
        from paho.mqtt.enums import CallbackAPIVersion

        self.store = store
        self.prefix = prefix
        self.poll_s = poll_s
        self._published: dict[str, tuple[int, list[str] | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            # The shipped broker's TLS listener (8883): verified against its CA, host name included.
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self._host, self._port = host, port

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            logger.warning("broker refused the announcer: %s", reason_code)
            return
        logger.info("announcer connected to %s:%s", self._host, self._port)
        with self._lock:
            self._published.clear()  # the broker may have lost its retained messages: send all again

    def start(self) -> None:
        self.client.connect_async(self._host, self._port, keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._loop, name="announcer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.client.is_connected():
                    self.announce_changes()
            except Exception:
                logger.exception("announcing failed; will retry")
            self._stop.wait(self.poll_s)

    def announce_changes(self) -> None:
        for name in self.store.models():
            try:
                aliases = self.store.aliases(name)
            except StoreError as exc:
                logger.warning("%s", exc)
                continue
            gateways = self.store.alias_gateways(name)
            for alias, version in aliases.items():
                key = f"{name}/{alias}"
                state = (version, gateways.get(alias))
                with self._lock:
                    if self._published.get(key) == state:
                        continue
                try:
                    notice = announcement(self.store, name, alias)
                except StoreError as exc:
                    logger.error("not announcing %s:%s: %s", name, alias, exc)
                    continue
                topic = announcement_topic(self.prefix, name, alias)
                info = self.client.publish(topic, notice.model_dump_json().encode(), qos=1, retain=True)
                if info.rc == 0:
                    with self._lock:
                        self._published[key] = state
                    logger.info("announced %s:%s -> v%s%s", name, alias, version,
                                f" for {','.join(state[1])}" if state[1] is not None else "")  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()


def serve(
    root: Path | str,
    host: str,
    port: int,
    announcer_args: dict[str, Any] | None = None,
    ready: threading.Event | None = None,
    security: ServerSecurity | None = None,
    insecure: bool = False,
) -> None:
    """Run until interrupted. ``announcer_args`` (host, port, prefix, ...) turns on the MQTT side.
    Raises ServerConfigError before anything listens when the security asked for cannot be had."""
    security = security or ServerSecurity()
    check_exposure(host, security, insecure)
    store = ModelStore(root)
    server = StoreHTTPServer(store, host, port, security)
    announcer = Announcer(store, **announcer_args) if announcer_args else None
    if announcer is not None:
        announcer.start()
    guard = "a bearer token" if server.token is not None else "no token"
    logger.info("serving store %s read-only on %s://%s:%s, %s", root, server.scheme, host, server.server_address[1],
                guard)  # fmt: skip
    if not is_loopback_host(host):
        missing = [what for what, absent in (("a token", server.token is None), ("TLS", server.tls is None)) if absent]
        if missing:
            logger.warning("--insecure: serving on %s without %s", host, " or ".join(missing))
    if ready is not None:
        ready.set()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if announcer is not None:
            announcer.stop()
