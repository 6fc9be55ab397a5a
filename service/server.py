"""The uvicorn configuration the service runs with, and the connection guards uvicorn lacks.

uvicorn bounds the idle time between keep-alive requests but not the time a client takes to send
its headers, nor the number of open connections short of answering 503 to requests it has already
read. A client that opens connections and sends nothing (or a header a byte at a time) would hold
them forever. The protocol below closes a connection whose headers are not complete within
``api.header_timeout_s`` and turns away connections past ``api.max_connections`` at once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import TYPE_CHECKING, Any, ClassVar

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.api.errors import error_body
from service.config import Settings


def _raw_response(status: str, code: str, message: str) -> bytes:
    body = json.dumps(error_body(code, message)).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


if TYPE_CHECKING:  # what the mixin is mixed into: both protocols have H11Protocol's attributes
    _Protocol = H11Protocol
else:
    _Protocol = object


class ConnectionGuard(_Protocol):
    """Mixed into uvicorn's httptools or h11 protocol: both keep ``cycle``, ``connections``, ``loop``
    and ``transport``, and call ``on_response_complete`` after each response."""

    header_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._got_bytes = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            message = f"more than {self.max_connections} open connections; retry later"
            transport.write(_raw_response("503 Service Unavailable", "too_many_connections", message))
            transport.close()
            return
        self._arm()

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        # Started once per request and not pushed back by each byte, or a trickle would keep it open.
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        super().data_received(data)
        if self._waiting_for_headers():
            self._arm()
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        # Between requests uvicorn's keep-alive timeout applies; ours starts with the next byte.
        self._disarm()
        self._got_bytes = False
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _header_timeout(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or not self._waiting_for_headers():
            return
        if self._got_bytes:
            message = f"the request headers did not arrive within {self.header_timeout_s:g} s"
            self.transport.write(_raw_response("408 Request Timeout", "request_timeout", message))
        self.transport.close()


def _http_base() -> type:
    # httptools parses faster where it is installed (the service extra has it); h11 is uvicorn's own.
    if importlib.util.find_spec("httptools") is not None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    return H11Protocol


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    api = settings.api
    protocol = type(
        "ServiceHttpProtocol",
        (ConnectionGuard, _http_base()),
        {"header_timeout_s": api.header_timeout_s, "max_connections": api.max_connections},
    )
    return uvicorn.Config(
        app,
        host=api.host,
        port=api.port,
        http=protocol,
        lifespan="on",
        log_level=settings.log_level.lower(),
        access_log=False,
        # uvicorn's hint says int, but it only hands the value to loop.call_later: fractions work.
        timeout_keep_alive=api.keepalive_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=5,
    )
