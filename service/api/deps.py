"""Typed dependencies: routes declare the parts of the service they use as parameters.

Only this module knows that the app holds a Runtime; a route gets the model manager, the analyser,
the camera registry and so on, never the runtime itself.
"""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from service.api.auth import CHALLENGE, auth_of, principal_of
from service.api.errors import ApiError
from service.cameras import CameraRegistry
from service.comms.base import Publisher
from service.config import Settings
from service.dashboard.latency import LatencyWindow
from service.dashboard.relay import EventRelay
from service.infer.analysis import ImageAnalyser
from service.metrics import Metrics
from service.models import ModelManager
from service.runtime import Runtime

BrokerState = Literal["disabled", "connected", "disconnected"]


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_settings(request: Request) -> Settings:
    return _runtime(request).settings


def get_models(request: Request) -> ModelManager:
    return _runtime(request).models


def get_analyser(request: Request) -> ImageAnalyser:
    return _runtime(request).analyser


def get_infer_limiter(request: Request) -> anyio.CapacityLimiter:
    """Images analysed at once; made by the app's lifespan, as it needs the event loop."""
    return request.app.state.infer_limiter


def get_cameras(request: Request) -> CameraRegistry:
    return _runtime(request).cameras


def get_publisher(request: Request) -> Publisher:
    # Read per request: the runtime replaces its placeholder publisher when it starts.
    return _runtime(request).publisher


def get_metrics(request: Request) -> Metrics:
    return _runtime(request).metrics


def get_metrics_registry(request: Request) -> CollectorRegistry:
    return _runtime(request).registry


def get_latency(request: Request) -> LatencyWindow:
    return _runtime(request).latency


def get_relay(request: Request) -> EventRelay | None:
    """The dashboard's broker subscriber; None when MQTT is off."""
    return _runtime(request).relay


def is_ready(request: Request) -> bool:
    return _runtime(request).ready


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelsDep = Annotated[ModelManager, Depends(get_models)]
AnalyserDep = Annotated[ImageAnalyser, Depends(get_analyser)]
InferLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_infer_limiter)]
CamerasDep = Annotated[CameraRegistry, Depends(get_cameras)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
MetricsRegistryDep = Annotated[CollectorRegistry, Depends(get_metrics_registry)]
LatencyDep = Annotated[LatencyWindow, Depends(get_latency)]
RelayDep = Annotated[EventRelay | None, Depends(get_relay)]
ReadyDep = Annotated[bool, Depends(is_ready)]


def broker_state(settings: SettingsDep, publisher: PublisherDep) -> BrokerState:
    if not settings.mqtt.enabled:
        return "disabled"
    return "connected" if publisher.connected else "disconnected"


BrokerDep = Annotated[BrokerState, Depends(broker_state)]


def require_admin(request: Request) -> None:
    """The bearer token or the page's session, as checked by the gate (service/api/auth.py); one
    credential grants every route, so the page's login may also use the privacy switch."""
    principal = principal_of(request)
    if principal.via is not None:
        return
    auth = auth_of(request)
    if auth.token is None and not auth.login_enabled:
        message = "admin routes are disabled: set api.token (FER_API__TOKEN) or api.token_file"
        raise ApiError(401, "admin_disabled", message, CHALLENGE)
    raise ApiError(401, "unauthorized", principal.refused or "missing bearer token", CHALLENGE)


AdminDep = Annotated[None, Depends(require_admin)]
