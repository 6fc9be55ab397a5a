"""Liveness, readiness, metrics and cameras."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import BrokerDep, CamerasDep, MetricsRegistryDep, ModelsDep, PublisherDep, ReadyDep, SettingsDep

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(
    ready: ReadyDep,
    models: ModelsDep,
    mqtt: BrokerDep,
    cameras: CamerasDep,
    publisher: PublisherDep,
    settings: SettingsDep,
) -> JSONResponse:
    """Ready once the model is loaded and warmed up; the broker is reported, not required."""
    model = models.current
    body: dict[str, Any] = {
        "ready": ready,
        "model": {"name": model.name, "version": model.version} if model else None,
        "mqtt": mqtt,
        "cameras": cameras.statuses(),
        "gateway": settings.gateway_id,
        # Reported, not fatal: the clash is the site's to fix, and this gateway's cameras still work.
        "camera_clashes": publisher.camera_clashes,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(registry: MetricsRegistryDep) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/cameras")
def cameras(registry: CamerasDep) -> dict[str, list[dict[str, Any]]]:
    return {"cameras": registry.listing()}
