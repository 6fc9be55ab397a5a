"""Every MQTT payload, versioned (docs/mqtt.md, "Topics" and "Events"). Nothing here can carry pixels,
crops or embeddings: the fields are labels, scores, times and ids, and extra fields are refused."""

from __future__ import annotations

import secrets
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.event_types import AnomalyLifecycle, AnomalyType, ExpressionEventType

SCHEMA_VERSION = 1
_ZONES = "the camera's zones the face is in now (Frigate's current_zones); empty without zones"
_ALPHABET = string.ascii_lowercase + string.digits


def new_event_id(start_time: float) -> str:
    """Frigate's id shape: ``<start-timestamp>-<6 random chars>``."""
    return f"{start_time:.6f}-{''.join(secrets.choice(_ALPHABET) for _ in range(6))}"


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = SCHEMA_VERSION
    gateway: str | None = Field(None, description="the gateway_id that sent it; null for a lone gateway")


class Availability(Payload):
    """``<prefix>/available`` (``<prefix>/gateways/<gateway>/available`` in a fleet): online on every
    connect, offline as the Last Will, stopped on shutdown."""

    state: Literal["online", "offline", "stopped"]
    timestamp: float
    service_version: str


class CameraStatus(Payload):
    """Retained ``<prefix>/<camera>/status``."""

    camera: str
    state: Literal["online", "offline"]
    reason: str | None = Field(None, description="why offline: open_failed, stream_lost, no_frames, stopped")
    timestamp: float


class AnalysisState(Payload):
    """Retained ``<prefix>/<camera>/analysis/state``: whether the camera is analysed at all.

    ``ON``/``OFF`` as Frigate's ``…/enabled/state`` and Home Assistant's switch expect them."""

    camera: str
    state: Literal["ON", "OFF"]
    timestamp: float


# What ``<prefix>/<camera>/analysis/set`` takes (Home Assistant's switch sends these).
SWITCH_PAYLOADS = {b"ON": True, b"OFF": False}


class ExpressionState(Payload):
    """Retained ``<prefix>/<camera>/expression``: the label of the most prominent tracked face."""

    camera: str
    label: str | None = Field(description="null when no face is tracked")
    score: float | None
    track_id: int | None
    faces: int
    timestamp: float
    model_version: int | None
    current_zones: list[str] = Field(default_factory=list, description=_ZONES)


class ExpressionChange(Payload):
    """On ``<prefix>/<camera>/events``: a tracked face's smoothed label changed and held."""

    kind: Literal["expression"] = "expression"
    event_type: ExpressionEventType = "expression_change"
    id: str
    camera: str
    track_id: int
    label: str
    previous_label: str | None
    score: float
    timestamp: float
    model_version: int | None
    current_zones: list[str] = Field(default_factory=list, description=_ZONES)


class AnomalyEvent(Payload):
    """On ``<prefix>/<camera>/events``: Frigate's new/update/end lifecycle; ``id`` is stable across it."""

    kind: Literal["anomaly"] = "anomaly"
    type: AnomalyLifecycle
    id: str
    camera: str
    event_type: AnomalyType
    label: str = Field(description="the label (or camera fault reason) behind the anomaly")
    score: float
    top_score: float
    start_time: float
    end_time: float | None = None
    track_id: int | None = None
    previous_label: str | None = Field(None, description="abrupt_change: the label changed from")
    model_version: int | None
    current_zones: list[str] = Field(default_factory=list, description=_ZONES)


Event = ExpressionChange | AnomalyEvent


class GatewayCameras(Payload):
    """Retained ``<prefix>/gateways/<gateway>/cameras``: the camera ids a gateway claims."""

    cameras: list[str]
    timestamp: float


class GatewayModel(Payload):
    """Retained ``<prefix>/gateways/<gateway>/model``: what a gateway serves after each rollout step."""

    name: str
    version: int | None
    sha256: str | None
    wanted_version: int | None = Field(None, description="the announced version this gateway follows")
    alias: str | None = Field(None, description="stable, or candidate when this gateway is named in it")
    state: Literal["serving", "downloading", "retrying"]
    error: str | None = None
    timestamp: float
