"""The HTTP section. The admin token is best given as FER_API__TOKEN."""

from __future__ import annotations

from pydantic import Field, SecretStr

from service.config._base import Strict


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: SecretStr | None = Field(None, description="admin bearer token; admin routes refuse everyone when unset")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="checked before anything is decoded")
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height read from the header")
    max_image_side: int = Field(16_384, ge=16)
    detect_max_side: int = Field(640, ge=64, description="images are scaled down to this for face detection")
    max_concurrency: int = Field(4, ge=1, le=64, description="images analysed at once; more requests wait")
    max_body_bytes_in_flight: int = Field(
        64 * 1024 * 1024, ge=1024, description="request bodies held by all requests together; more requests wait"
    )
    max_decode_pixels: int = Field(
        16_000_000, ge=1, description="decoded pixels held by all requests together; more requests wait"
    )
    header_timeout_s: float = Field(10.0, gt=0, description="a connection must send complete headers within this")
    body_timeout_s: float = Field(30.0, gt=0, description="a request body must arrive within this (408 after)")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(512, ge=1, description="open connections; past this a new one gets a 503")
