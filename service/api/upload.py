"""Getting the image bytes out of a request, in memory only (never spooled to disk).

Accepted: multipart/form-data with a `file` part, JSON {"image": "<base64 or data: URL>"}, or a
raw image/jpeg, image/png or image/webp body. The body size is already bounded by the middleware.
"""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.api.errors import ApiError

RAW_TYPES = {"image/jpeg", "image/png", "image/webp", "application/octet-stream"}
ACCEPTED = "multipart/form-data, application/json, image/jpeg, image/png or image/webp"


def media_type(request: Request) -> tuple[str, dict[bytes, bytes]]:
    mime, params = parse_options_header(request.headers.get("content-type", ""))
    return mime.decode("latin-1").lower(), params


def check_media_type(mime: str) -> None:
    if mime not in RAW_TYPES and mime not in ("multipart/form-data", "application/json"):
        raise ApiError(415, "unsupported_media_type", f"content type {mime or 'none'!r} is not one of {ACCEPTED}")


def _multipart_file(body: bytes, boundary: bytes) -> bytes:
    parts: list[dict] = []
    current: dict = {}
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal current
        current = {"headers": {}, "data": bytearray()}
        parts.append(current)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current["headers"][bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"].extend(data[start:end])

    try:
        # The constructor itself refuses some boundaries (longer than 256 bytes), so it is inside too.
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_part_data": on_part_data,
            },
        )
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from None
    for part in parts:
        _, disp = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if disp.get(b"name") == b"file":
            return bytes(part["data"])
    raise ApiError(422, "missing_file", "the multipart body has no `file` part")


def _json_image(body: bytes) -> bytes:
    try:
        doc = json.loads(body)
    # ValueError also covers integers past Python's digit limit; RecursionError, deep nesting.
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("image"), str):
        raise ApiError(422, "missing_image", 'expected {"image": "<base64>"}')
    extra = set(doc) - {"image"}
    if extra:
        raise ApiError(422, "validation_error", f"unknown field(s): {sorted(extra)}")
    text = doc["image"]
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", "`image` is not valid base64") from None


def extract_image(body: bytes, mime: str, params: dict[bytes, bytes]) -> bytes:
    """The image bytes in a request body; CPU work on up to the body limit, so run off the event loop."""
    if mime == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "bad_multipart", "multipart content type without a boundary")
        data = _multipart_file(body, boundary)
    elif mime == "application/json":
        data = _json_image(body)
    else:
        data = body
    if not data:
        raise ApiError(422, "empty_image", "the image is empty")
    return data
