"""Liveness, readiness, metrics and cameras."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import RuntimeDep

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready once the model is loaded and warmed up; the broker is reported, not required."""
    model = runtime.models.current
    mqtt = "disabled" if not runtime.settings.mqtt.enabled else (
        "connected" if runtime.publisher.connected else "disconnected"
    )  # fmt: skip
    body: dict[str, Any] = {
        "ready": runtime.ready,
        "model": {"name": model.name, "version": model.version} if model else None,
        "mqtt": mqtt,
        "cameras": {p.cam.id: p.snapshot()["status"] for p in runtime.pipelines},
        "gateway": runtime.settings.gateway_id,
        # Reported, not fatal: the clash is the site's to fix, and this gateway's cameras still work.
        "camera_clashes": runtime.publisher.camera_clashes,
    }
    return JSONResponse(body, status_code=200 if runtime.ready else 503)


@router.get("/metrics")
def metrics(runtime: RuntimeDep) -> Response:
    return Response(generate_latest(runtime.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/cameras")
def cameras(runtime: RuntimeDep) -> dict[str, list[dict[str, Any]]]:
    running = {p.cam.id: p.snapshot() for p in runtime.pipelines}
    out = []
    for cam in runtime.settings.cameras:
        if cam.id in running:
            out.append(running[cam.id])
        else:
            out.append({"id": cam.id, "name": cam.name or cam.id, "enabled": cam.enabled, "status": "disabled"})
    return {"cameras": out}
