"""Who may use the HTTP surface: the gate in front of every route, and what it knows.

Off loopback (api.host anything but 127.0.0.0/8, ::1 or localhost), every route but /healthz and the
login itself needs credentials, as Frigate's authenticated port does since 0.14: the page's session
cookie (a password, then the cookie) or, for machines, `Authorization: Bearer <token>`, the token being
api.token or the first line of api.token_file (compose's Prometheus reads the same file). /metrics
joins the open routes with api.metrics_open. On loopback nothing is required, so `make run` is open
as before, but credentials that are sent are still checked: a wrong token is refused where one is
needed (the admin routes), and a change made with the page's cookie still needs its CSRF token.

The gate is ASGI middleware rather than a dependency on each route, so a route added later, the
static files, /docs and /openapi.json are covered without anyone remembering to. What it decided is
left in the request's state for the admin routes (service/api/deps.py) and the page's routes.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import anyio
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.api.passwords import FILE_NAME as PASSWORD_FILE
from service.api.passwords import ActivePassword, active_password
from service.api.ratelimit import FailureLimiter
from service.api.sessions import Session, SessionStore
from service.config import Settings

logger = logging.getLogger(__name__)

COOKIE = "fer_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    """What a request proved: the token, a page session, or nothing; ``refused`` says why a
    credential it sent did not count."""

    via: Literal["token", "session"] | None = None
    session: Session | None = None
    refused: str | None = None


def principal_of(request: Request) -> Principal:
    return getattr(request.state, "principal", None) or Principal()


def auth_of(request: Request) -> Auth:
    return request.app.state.auth


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def cross_site(request: Request) -> bool:
    """Fetch Metadata (W3C; OWASP's CSRF cheat sheet): the browser says whether another site made
    this request. Another port or sub-domain of the same host is `same-site` but another origin:
    also refused."""
    return request.headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site")


def cookie_header(value: str, max_age: int, secure: bool) -> str:
    # SameSite=Strict: no other site's page, link or form ever carries the cookie here.
    cookie = f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict"
    return f"{cookie}; Secure" if secure else cookie


def locked_out(retry_after: int) -> tuple[str, dict[str, str]]:
    """The message and headers of a 429 too_many_attempts."""
    return f"too many failed attempts from this address; try again in {retry_after} s", {
        "Retry-After": str(retry_after)
    }


def wants_html(request: Request) -> bool:
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


class Auth:
    """The credentials the service accepts; ``start`` reads or makes the page's password."""

    def __init__(self, settings: Settings) -> None:
        api = settings.api
        self.required = api.credentials_required
        self.host = api.host
        # Set by start(): api.token_file is read there, where the service runs.
        self.token: SecretStr | None = None
        self._api = api
        self.open_paths = frozenset({"/healthz", "/login", *(["/metrics"] if api.metrics_open else [])})
        self.limiter = FailureLimiter(api.login_max_failures, api.login_window_s, api.login_max_failures_total)
        self.password: ActivePassword | None = None
        self.sessions: SessionStore | None = None
        self._state_dir = Path(settings.state_dir)
        self._configured = api.password.get_secret_value() if api.password else None
        self._ttl_s = api.session_ttl_s
        # scrypt holds 16 MiB while it runs: one verification at a time bounds what logins can cost.
        self.verify_limiter: anyio.CapacityLimiter | None = None

    @property
    def login_enabled(self) -> bool:
        return self.sessions is not None

    def start(self) -> None:
        """Blocking (scrypt, file I/O): run off the event loop, before the port opens."""
        # The token first: a bad token_file stops the start before a password is generated.
        self.token = self._api.bearer_token()
        if self._api.token is not None and self._api.token_file is not None:
            logger.info("api.token is set, so api.token_file %s is not read: whoever sends that one is refused",
                        self._api.token_file)  # fmt: skip
        self.password = active_password(self._state_dir, self._configured, generate=self.required)
        if self.password is not None:
            self.sessions = SessionStore(self._state_dir, self._ttl_s, self.password.fingerprint)
        if self.password is not None and self.password.generated_file is not None:
            # The password itself goes to a file readable by the service's user only, never to stdout
            # or the log: Docker's json-file log and journald keep whatever a process prints.
            logger.warning(
                "the page's login password was generated into %s (readable by this user only; delete it once you "
                "have it); only its scrypt hash is kept (%s). To choose your own, set api.password "
                "(FER_API__PASSWORD)", self.password.generated_file, self._state_dir / PASSWORD_FILE,
            )
        if not self.required:
            logger.info("HTTP on loopback (%s): open without credentials", self.host)
            return
        logger.info(
            "HTTP on %s: every route but %s needs credentials (the page: log in at /login; machines: the bearer token)",
            self.host, ", ".join(sorted(self.open_paths - {"/login"})),
        )  # fmt: skip
        if self.token is None:
            logger.warning(
                "neither api.token nor api.token_file is set: only the page's login gets in, no machine (Prometheus, "
                "scripts)"
            )

    def check(self, request: Request) -> Principal | Response:
        """The request's principal, or the answer that refuses it."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given = given.strip()
        if scheme.lower() == "bearer" and given:
            principal = self._bearer(request, given)
            if isinstance(principal, Response):
                return principal
        else:
            principal = self.session_principal(request)
        if principal.session is not None and request.method not in SAFE_METHODS:
            problem = self._csrf_problem(request, principal.session)
            if problem is not None:
                return error_response(403, "csrf_failed", problem)
        if self.required and principal.via is None:
            return self.challenge(request, principal.refused)
        return principal

    def _bearer(self, request: Request, given: str) -> Principal | Response:
        if self.token is None:
            return Principal(refused="no api.token or api.token_file is set, so no bearer token is accepted")
        address = client_address(request)
        retry_after = self.limiter.retry_after(address)
        if retry_after is not None:
            return error_response(429, "too_many_attempts", *locked_out(retry_after))
        if hmac.compare_digest(given.encode(), self.token.get_secret_value().encode()):
            return Principal("token")
        self.limiter.fail(address)
        return Principal(refused="invalid token")

    def session_principal(self, request: Request) -> Principal:
        session_id = request.cookies.get(COOKIE)
        if not session_id or self.sessions is None:
            return Principal()
        session = self.sessions.get(session_id)
        return Principal("session", session) if session is not None else Principal()

    @staticmethod
    def _csrf_problem(request: Request, session: Session) -> str | None:
        if cross_site(request):
            return "a request from another site cannot use the page's session"
        given = request.headers.get(CSRF_HEADER, "")
        if not given or not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
            return f"a change made with the page's session needs its {CSRF_HEADER} header (GET /session gives it)"
        return None

    def challenge(self, request: Request, refused: str | None) -> Response:
        if wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        message = refused or "credentials required: log in at /login, or send Authorization: Bearer <api.token>"
        return error_response(401, "unauthorized", message, CHALLENGE)


class AuthMiddleware:
    """Runs ``Auth.check`` on every HTTP request but those to the open paths, and renews a page's
    session that is past half its lifetime (the answer then carries the cookie again)."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.auth.open_paths:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        decision = self.auth.check(request)
        if isinstance(decision, Response):
            await decision(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = decision
        session, sessions = decision.session, self.auth.sessions
        if session is None or sessions is None or not sessions.renew_if_due(session):
            await self.app(scope, receive, send)
            return
        renewed = cookie_header(request.cookies[COOKIE], int(sessions.ttl_s), scope.get("scheme") == "https")

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", renewed.encode())]}
            await send(message)

        await self.app(scope, receive, with_cookie)
