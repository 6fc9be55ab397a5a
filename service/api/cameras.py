"""PUT /cameras/{id}/analysis: the privacy switch over HTTP, behind the admin token."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from service.api.deps import AdminDep, RuntimeDep
from service.api.errors import ApiError
from service.api.schemas import AnalysisRequest

router = APIRouter()


@router.put("/cameras/{camera_id}/analysis")
async def set_analysis(camera_id: str, body: AnalysisRequest, runtime: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    configured = next((c for c in runtime.settings.cameras if c.id == camera_id), None)
    if configured is None:
        raise ApiError(404, "unknown_camera", f"no camera {camera_id!r} in the config")
    if not configured.enabled:
        raise ApiError(409, "camera_disabled", f"camera {camera_id!r} is disabled in the config (cameras[].enabled)")
    try:
        # Pausing joins the camera's threads: off the event loop.
        state = await anyio.to_thread.run_sync(runtime.set_analysis, camera_id, body.state == "ON")
    except KeyError:
        raise ApiError(503, "unavailable", "the service is starting or stopping") from None
    return state.model_dump()
