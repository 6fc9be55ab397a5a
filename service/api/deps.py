"""Typed dependencies: routes declare what they need as parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.auth import CHALLENGE, auth_of, principal_of
from service.api.errors import ApiError
from service.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_admin(request: Request, runtime: RuntimeDep) -> None:
    """The bearer token or the page's session, as checked by the gate (service/api/auth.py); one
    credential grants every route, so the page's login may also use the privacy switch."""
    principal = principal_of(request)
    if principal.via is not None:
        return
    if runtime.settings.api.token is None and not auth_of(request).login_enabled:
        raise ApiError(401, "admin_disabled", "admin routes are disabled: set api.token (FER_API__TOKEN)", CHALLENGE)
    raise ApiError(401, "unauthorized", principal.refused or "missing bearer token", CHALLENGE)


AdminDep = Annotated[None, Depends(require_admin)]
