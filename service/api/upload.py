"""Getting the image bytes out of a request, in memory only (never spooled to disk).

Accepted: multipart/form-data with a `file` part, JSON {"image": "<base64 or data: URL>"}, or a
raw image/jpeg, image/png or image/webp body. The body size is already bounded by the middleware.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

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


# What a body may build, beside its bytes: 10 MB of tiny parts or of `[],` would otherwise become
# hundreds of MB of Python objects (docs/security.md, "Request bodies").
MAX_PARTS = 16
MAX_PART_HEADER_BYTES = 16 * 1024
# A JSON body past this is read only in the one shape /infer takes; a smaller one is parsed in full,
# for the precise error.
MAX_FREE_JSON_BYTES = 64 * 1024
_JSON_HEAD = re.compile(rb'\s*\{\s*"image"\s*:\s*"')


def _multipart_file(body: bytes, boundary: bytes) -> bytes:
    """The first part named `file`; only its data is kept, and past MAX_PARTS parts the body is refused."""
    found: bytearray | None = None
    in_file = False
    parts = 0
    header_bytes = 0
    header_field = bytearray()
    header_value = bytearray()
    disposition = b""

    def on_part_begin() -> None:
        nonlocal parts, in_file, header_bytes, disposition
        parts += 1
        if parts > MAX_PARTS:
            raise ApiError(400, "bad_multipart", f"a multipart body of more than {MAX_PARTS} parts")
        in_file, header_bytes, disposition = False, 0, b""

    def count(n: int) -> None:
        nonlocal header_bytes
        header_bytes += n
        if header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(400, "bad_multipart", f"a part's headers exceed {MAX_PART_HEADER_BYTES} bytes")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        count(end - start)
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        count(end - start)
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        nonlocal disposition
        if bytes(header_field).lower() == b"content-disposition":
            disposition = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal in_file, found
        _, disp = parse_options_header(disposition)
        if found is None and disp.get(b"name") == b"file":
            found, in_file = bytearray(), True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if in_file and found is not None:
            found.extend(data[start:end])

    def on_part_end() -> None:
        nonlocal in_file
        in_file = False

    try:
        # The constructor itself refuses some boundaries (longer than 256 bytes), so it is inside too.
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from None
    if found is None:
        raise ApiError(422, "missing_file", "the multipart body has no `file` part")
    return bytes(found)


def _image_text(body: bytes) -> str:
    """`image` of {"image": "<string>"}: read as that one string, so nothing else is ever built."""
    head = _JSON_HEAD.match(body)
    if head is not None:
        try:
            doc = body.decode("utf-8")
            text, end = json.decoder.scanstring(doc, head.end())  # type: ignore[attr-defined]
        except ValueError:  # UnicodeDecodeError included
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        if doc[end:].strip() == "}":
            return text
    if len(body) > MAX_FREE_JSON_BYTES:
        shape = '{"image": "<base64>"}'
        raise ApiError(422, "missing_image", f"a JSON body past {MAX_FREE_JSON_BYTES} bytes must be exactly {shape}")
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
    return doc["image"]


def _json_image(body: bytes) -> bytes:
    text = _image_text(body)
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
