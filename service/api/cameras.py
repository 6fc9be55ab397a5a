"""PUT /cameras/{id}/analysis: the privacy switch over HTTP, behind the admin token."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from service.api.deps import AdminDep, CamerasDep
from service.api.schemas import AnalysisRequest

router = APIRouter()


@router.put("/cameras/{camera_id}/analysis")
async def set_analysis(camera_id: str, body: AnalysisRequest, cameras: CamerasDep, _: AdminDep) -> dict[str, Any]:
    # Pausing joins the camera's threads: off the event loop.
    state = await anyio.to_thread.run_sync(cameras.set_analysis, camera_id, body.state == "ON")
    return state.model_dump()
