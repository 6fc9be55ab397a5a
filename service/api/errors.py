"""Typed errors: every failure is {"error": {"code", "message"}} with a 4xx, never a traceback.

The core raises errors of its own kinds and knows nothing of HTTP; this module alone gives each kind
its status and error code. Anything not handled here becomes a typed 500 in the request guard
(service/api/limits.py)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.cameras import CameraError, CameraProblem
from service.infer.imaging import ImageError, ImageProblem
from service.models import PromoteError, Refusal

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised at the API edge; the core raises its own exceptions, translated here."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


_IMAGE_ERRORS: dict[ImageProblem, tuple[int, str]] = {
    ImageProblem.UNSUPPORTED_FORMAT: (415, "unsupported_image_format"),
    ImageProblem.INVALID: (422, "invalid_image"),
    ImageProblem.TOO_LARGE: (413, "image_too_large"),
}
_CAMERA_ERRORS: dict[CameraProblem, tuple[int, str]] = {
    CameraProblem.UNKNOWN: (404, "unknown_camera"),
    CameraProblem.DISABLED: (409, "camera_disabled"),
    CameraProblem.NOT_RUNNING: (503, "unavailable"),
}
# A refused promotion or rollback is a 422. These refusals have codes of their own; the others are
# named for the operation (promote_failed, rollback_failed).
_REFUSAL_CODES: dict[Refusal, str] = {
    Refusal.UNKNOWN_VERSION: "unknown_version",
    Refusal.UNVERIFIED: "verify_failed",
}

CoreError = ImageError | CameraError | PromoteError
_CORE_ERRORS = (ImageError, CameraError, PromoteError)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def from_core(exc: CoreError) -> ApiError:
    """The HTTP answer to an error the core raised."""
    if isinstance(exc, ImageError):
        status, code = _IMAGE_ERRORS[exc.kind]
    elif isinstance(exc, CameraError):
        status, code = _CAMERA_ERRORS[exc.kind]
    else:
        status, code = 422, _REFUSAL_CODES.get(exc.kind, f"{exc.operation}_failed")
    return ApiError(status, code, str(exc))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def _core_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, _CORE_ERRORS)
        answer = from_core(exc)
        return error_response(answer.status, answer.code, answer.message)

    for kind in _CORE_ERRORS:
        app.add_exception_handler(kind, _core_error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        code = "invalid_json" if first.get("type") == "json_invalid" else "validation_error"
        status = 400 if code == "invalid_json" else 422
        return error_response(status, code, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))
