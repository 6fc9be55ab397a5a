"""Response and request bodies of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
