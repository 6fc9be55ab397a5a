"""Response and request bodies of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaceBox(_Out):
    x: int
    y: int
    w: int
    h: int


class FaceOut(_Out):
    box: FaceBox
    face_confidence: float | None = Field(description="detector score; null for detectors without one (Haar)")
    label: str
    scores: dict[str, float] = Field(description="per-class probabilities in the manifest's label order; sum to 1")


class ModelRef(_Out):
    name: str
    version: int


class ImageInfo(_Out):
    width: int
    height: int
    format: str


class InferResponse(_Out):
    request_id: str
    model: ModelRef
    model_version: int
    image: ImageInfo
    faces: list[FaceOut]
    timings_ms: dict[str, float]


class PromoteRequest(_Out):
    version: int = Field(ge=1)
    alias: str = Field("stable", pattern=r"^[a-z][a-z0-9_-]*$")


class RollbackRequest(_Out):
    alias: str = Field("stable", pattern=r"^[a-z][a-z0-9_-]*$")


class AnalysisRequest(_Out):
    """PUT /cameras/{id}/analysis, with the values of the MQTT switch."""

    state: Literal["ON", "OFF"]


class LoginRequest(_Out):
    """POST /login as JSON; the page's form sends the same two fields."""

    password: SecretStr = Field(max_length=1024)
    next: str = Field("/", max_length=2048, description="where a form login goes next (a path on this service)")


class LoginResponse(_Out):
    csrf_token: str = Field(description="send it as X-CSRF-Token with every change made with this session")
    expires_at: float


class SessionInfo(_Out):
    """GET /session: what this request authenticated with, and what the page needs to make changes."""

    credentials: Literal["token", "session"] | None
    csrf_token: str | None
    expires_at: float | None
    login_required: bool = Field(description="false on loopback, where credentials are checked but not required")
    login_enabled: bool = Field(description="whether a password is set, so that /login can succeed")
