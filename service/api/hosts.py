"""Which sites may talk to the service: the Host allow-list and the refusal of cross-site changes.

On loopback nothing needs credentials, so what stands between a page on another site and the
service is the browser. Two things that page can still do:
- **DNS rebinding**: its own name re-pointed at 127.0.0.1, so the browser reads the answers as
  same-origin. The request then carries the attacker's name in `Host`, which the allow-list refuses
  (Starlette's ``TrustedHostMiddleware`` does the same, with a plain-text answer).
- **A cross-site form or no-cors `fetch`**: it cannot read the answer, but a `POST /infer` still runs.
  The browser says where the request came from (Fetch Metadata, `Origin`), and a change from
  another site is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.auth import SAFE_METHODS
from service.api.errors import error_response


def host_name(value: str) -> str:
    """The name of a `Host` header or an origin's authority, without its port: `[::1]:8000` is `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:  # name:port; more colons is a bare IPv6 address
        value = value.rpartition(":")[0]
    return value.rstrip(".")


def host_allowed(name: str, allowed: Sequence[str]) -> bool:
    """Starlette's rules: `*` admits any host, `*.example.com` any sub-domain of example.com."""
    for pattern in allowed:
        if pattern == "*" or name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def cross_site_change(method: str, headers: Headers) -> bool:
    """A change (not GET, HEAD or OPTIONS) that the browser says another site started: Fetch Metadata
    where the browser sends it, else an `Origin` whose authority is not the request's `Host`."""
    if method in SAFE_METHODS:
        return False
    site = headers.get("sec-fetch-site", "").lower()
    if site:
        return site in ("cross-site", "same-site")
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":  # a sandboxed frame, a data: URL, a file: page
        return True
    return urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


class HostGuardMiddleware:
    """400 `invalid_host` for a `Host` outside ``allowed``; 403 `csrf_failed` for a cross-site change."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = tuple(a.lower() for a in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        name = host_name(headers.get("host", ""))
        if not host_allowed(name, self.allowed):
            answer = error_response(
                400, "invalid_host",
                f"Host {name or '(none)'!r} is not one this service answers to; add it to api.allowed_hosts",
            )  # fmt: skip
        elif cross_site_change(scope["method"], headers):
            answer = error_response(403, "csrf_failed", "a request from another site cannot change anything here")
        else:
            await self.app(scope, receive, send)
            return
        await answer(scope, receive, send)
