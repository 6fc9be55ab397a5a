"""The page's login: GET /login (the form), POST /login (a password for a session cookie), POST /logout
and GET /session (what a request authenticated with, and the CSRF token the page sends with changes).

POST /login answers a form (the login page) with a redirect or the page again with the error, and
JSON with JSON, so a script can log in as the page does.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from service.api import login_page
from service.api.auth import (
    CHALLENGE,
    auth_of,
    client_address,
    cookie_header,
    cross_site,
    locked_out,
    principal_of,
)
from service.api.errors import ApiError, error_response
from service.api.passwords import verify_password
from service.api.schemas import LoginRequest, LoginResponse, SessionInfo
from service.api.upload import media_type

logger = logging.getLogger(__name__)
router = APIRouter()

_FORM = "application/x-www-form-urlencoded"
# A password and a path: anything longer is not a login.
_MAX_BODY = 4096


def safe_next(value: str | None) -> str:
    """A path on this service, or `/`: never another site (OWASP, unvalidated redirects), and never
    the login page itself."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
        or value == "/login"
        or value.startswith(("/login?", "/login/"))
    ):
        return "/"
    return value


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > _MAX_BODY:
        raise ApiError(413, "payload_too_large", f"a login body is at most {_MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            raise ApiError(413, "payload_too_large", f"a login body is at most {_MAX_BODY} bytes")
    return bytes(body)


def _parse(body: bytes, as_form: bool) -> LoginRequest:
    try:
        if not as_form:
            return LoginRequest.model_validate_json(body)
        try:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=8)
        except ValueError:  # not UTF-8, or more fields than a login has
            raise ApiError(400, "bad_request", "the login form cannot be read") from None
        # Only these two: the form's user name is for password managers.
        return LoginRequest.model_validate({k: v[-1] for k, v in fields.items() if k in ("password", "next")})
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, "validation_error", f"{where}: {first['msg']}") from None


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, next_path: str = Query("/", alias="next")) -> Response:
    # async, as every route that reads the session store: only the event loop touches it.
    auth = auth_of(request)
    target = safe_next(next_path)
    # Nothing to log into (loopback without a password), or already in: go on.
    if not auth.login_enabled or auth.session_principal(request).session is not None:
        return RedirectResponse(target, status_code=303)
    return login_page.render(target)


@router.post(
    "/login",
    response_model=LoginResponse,
    responses={401: {"description": "invalid_password"}, 429: {"description": "too_many_attempts"}},
)
async def login(request: Request) -> Response:
    auth = auth_of(request)
    mime, _ = media_type(request)
    as_form = mime == _FORM
    next_path = "/"

    def refuse(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        if as_form:
            return login_page.render(next_path, status, (code, message), headers)
        return error_response(status, code, message, headers)

    if cross_site(request):
        return refuse(403, "csrf_failed", "a login cannot come from another site")
    if auth.sessions is None or auth.password is None:
        return refuse(403, "login_disabled", "no password is set: set api.password (FER_API__PASSWORD)")
    if not as_form and mime != "application/json":
        raise ApiError(415, "unsupported_media_type", f"a login is {_FORM} or application/json")
    try:
        payload = _parse(await _read_body(request), as_form)
    except ApiError as exc:
        return refuse(exc.status, exc.code, exc.message)
    next_path = safe_next(payload.next)
    address = client_address(request)
    retry_after = auth.limiter.retry_after(address, login=True)
    if retry_after is not None:
        return refuse(429, "too_many_attempts", *locked_out(retry_after))
    # Counted before it is judged, so that concurrent guesses cannot all slip under the limit.
    auth.limiter.fail(address, login=True)
    password = payload.password.get_secret_value()
    ok = await anyio.to_thread.run_sync(verify_password, password, auth.password.hash, limiter=auth.verify_limiter)
    if not ok:
        logger.warning("failed page login from %s", address)
        return refuse(401, "invalid_password", "wrong password", CHALLENGE)
    auth.limiter.take_back(address)
    session_id, session = auth.sessions.create()
    logger.info("page login from %s", address)
    if as_form:
        response: Response = RedirectResponse(next_path, status_code=303)
    else:
        answer = LoginResponse(csrf_token=session.csrf_token, expires_at=session.expires_at)
        response = JSONResponse(answer.model_dump())
    response.headers.append("set-cookie", cookie_header(session_id, int(auth.sessions.ttl_s), _secure(request)))
    return response


@router.post("/logout")
async def logout(request: Request) -> JSONResponse:
    """Ends the page's session (the CSRF token is checked by the gate) and clears its cookie."""
    auth, session = auth_of(request), principal_of(request).session
    if session is not None and auth.sessions is not None:
        auth.sessions.end(session)
    response = JSONResponse({"logged_out": session is not None})
    response.headers.append("set-cookie", cookie_header("", 0, _secure(request)))
    return response


@router.get("/session", response_model=SessionInfo)
def session_info(request: Request) -> SessionInfo:
    auth, principal = auth_of(request), principal_of(request)
    session = principal.session
    return SessionInfo(
        credentials=principal.via,
        csrf_token=session.csrf_token if session else None,
        expires_at=session.expires_at if session else None,
        login_required=auth.required,
        login_enabled=auth.login_enabled,
    )


def _secure(request: Request) -> bool:
    # Behind a TLS proxy that says so (uvicorn's proxy headers), the cookie is for HTTPS only.
    return request.url.scheme == "https"
