"""Typed dependencies: routes declare what they need as parameters."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.api.errors import ApiError
from service.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_admin(request: Request, runtime: RuntimeDep) -> None:
    token = runtime.settings.api.token
    challenge = {"WWW-Authenticate": "Bearer"}
    if token is None:
        raise ApiError(401, "admin_disabled", "admin routes are disabled: set api.token (FER_API__TOKEN)", challenge)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "unauthorized", "missing bearer token", challenge)
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "invalid token", challenge)


AdminDep = Annotated[None, Depends(require_admin)]
