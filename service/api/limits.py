"""ASGI middleware: the request guard (counting, no 500 that poisons a connection, hang-ups told
apart from server errors) and the body limits (size and read time, before anything parses)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import ApiError, error_body
from service.metrics import Metrics

logger = logging.getLogger(__name__)

# nginx's "client closed request": the client left, so no answer was sent and it is not our error.
CLIENT_CLOSED = 499
_CLOSE = (b"connection", b"close")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"request body exceeds {limit} bytes")


class BodyTimeout(ApiError):
    def __init__(self, limit: float) -> None:
        super().__init__(408, "request_timeout", f"the request body did not arrive within {limit:g} s")


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


class RequestGuardMiddleware:
    """The outermost layer: counts fer_http_requests_total by route template (bounded) and status.

    An unexpected exception becomes a typed 500 here and is not re-raised: re-raised, the server
    would close the keep-alive connection after the response without saying so, and the client's
    next request on it would fail. Any answer sent before the request body was read completely
    says `Connection: close`, since the unread rest of the body cannot be told from the next request.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, _quiet_startup_failure(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        body_done = not _has_body(scope)
        disconnected = False
        started = time.perf_counter()

        async def watch() -> Message:
            nonlocal body_done, disconnected
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            elif message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if not body_done and _CLOSE not in message.get("headers", []):
                    message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, watch, capture)
        except ClientDisconnect:
            disconnected = True
        except Exception:
            if not disconnected:
                logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                if status == 0:
                    await capture(_start(500, "internal_error", "internal error", close=True))
                    await capture({"type": "http.response.body", "body": _body("internal_error", "internal error")})
        finally:
            if status == 0 and disconnected:
                status = CLIENT_CLOSED
                logger.debug("client closed the connection during %s %s", scope.get("method"), scope.get("path"))
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(path, str(status or 500)).inc()
            if path == "/infer":
                self.metrics.infer_seconds.labels("total").observe(time.perf_counter() - started)


def _quiet_startup_failure(send: Send) -> Send:
    # The lifespan has logged why in one line; Starlette's message is the whole traceback.
    async def quiet(message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            message = {**message, "message": ""}
        await send(message)

    return quiet


class ByteBudget:
    """Request-body bytes that all requests together may hold; a request waits for its share before
    its body is read, so what waits stays in the socket (uvicorn stops reading past 64 KiB)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._cond = anyio.Condition()

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        n = min(n, self.capacity)
        async with self._cond:
            while self.used + n > self.capacity:
                await self._cond.wait()
            self.used += n
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._cond:
                    self.used -= n
                    self._cond.notify_all()


class BodyLimitMiddleware:
    """Refuses by Content-Length before reading; counts streamed (chunked) bodies as they arrive;
    a body that has not arrived within ``timeout_s`` of its first read is refused with a 408; and
    the bodies of all requests together stay within ``budget`` (a chunked one counts as the limit).

    The deadline covers the body only: once it is complete, the application may wait on ``receive``
    for as long as its response lasts (a server-sent event stream waits there for the hang-up).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, budget: ByteBudget) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value
                break
        if length is not None:
            if not length.isdigit():
                await _send_error(send, 400, "bad_request", "invalid Content-Length")
                return
            if int(length) > self.max_bytes:
                await _send_error(send, 413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")
                return
        seen = 0
        limit = self.max_bytes
        deadline: float | None = None
        complete = False

        async def limited() -> Message:
            nonlocal seen, deadline, complete
            if complete:  # past the body, a read only waits for the client to leave (a long stream)
                return await receive()
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.timeout_s
            try:
                with anyio.fail_after(max(0.0, deadline - now)):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            return message

        if not _has_body(scope):
            await self.app(scope, receive, send)
            return
        async with self.budget.hold(int(length) if length is not None else self.max_bytes):
            await self.app(scope, limited, send)


def _body(code: str, message: str) -> bytes:
    return json.dumps(error_body(code, message)).encode()


def _start(status: int, code: str, message: str, *, close: bool) -> Message:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_body(code, message))).encode())]
    return {"type": "http.response.start", "status": status, "headers": [*headers, _CLOSE] if close else headers}


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    await send(_start(status, code, message, close=True))
    await send({"type": "http.response.body", "body": _body(code, message)})
