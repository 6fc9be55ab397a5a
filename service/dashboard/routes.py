"""GET / (the page), GET /dashboard/state (this gateway, polled) and GET /dashboard/stream (the broker, as SSE).

The page is plain HTML, CSS and JS served from this package: no CDN, no build step. Its content
security policy allows nothing but this origin, so it cannot load or send anything elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, StreamingResponse

from service import __version__
from service.api.auth import auth_of, principal_of
from service.api.deps import BrokerDep, CamerasDep, LatencyDep, ModelsDep, ReadyDep, RelayDep, SettingsDep
from service.api.models import accuracy
from service.dashboard.history import WINDOW_S

STATIC = Path(__file__).with_name("static")
_CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
_HEARTBEAT_S = 15.0
# EventSource waits this long before it reconnects after a service restart.
_RETRY_MS = 2000

router = APIRouter()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})


@router.get("/dashboard/state")
def state(
    request: Request,
    models: ModelsDep,
    ready: ReadyDep,
    broker: BrokerDep,
    cameras: CamerasDep,
    latency: LatencyDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    model = models.current
    served = None
    if model is not None:
        served = {
            "name": model.name,
            "version": model.version,
            "variant": model.variant,
            "labels": model.labels,
            "accuracy": accuracy(model),
            "sha256": model.sha256,
        }
    return {
        "service_version": __version__,
        "ready": ready,
        "mqtt": {"state": broker, "prefix": settings.mqtt.prefix},
        # Whether the switch can work from this page: with the page's session, or with a token typed in.
        "admin": auth_of(request).token is not None or principal_of(request).session is not None,
        "model": served,
        "cameras": cameras.listing(),
        "latency": latency.summary(),
    }


def _sse(item: dict[str, Any]) -> str:
    return f"data: {json.dumps(item, separators=(',', ':'))}\n\n"


@router.get("/dashboard/stream")
async def stream(request: Request, relay: RelayDep) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        yield f"retry: {_RETRY_MS}\n\n"
        if relay is None:
            yield _sse({"type": "snapshot", "broker": {"connected": False, "disabled": True}, "retained": {},
                        "events": [], "now": time.time(), "window_s": WINDOW_S, "timeline": {}})  # fmt: skip
            # Nothing will ever come; the page polls /dashboard/state for this gateway's cameras.
            while _goes_on(request):
                await asyncio.sleep(1.0)
            return
        snapshot, queue = relay.listen()
        try:
            yield _sse(snapshot)
            idle = 0.0
            while _goes_on(request):
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    idle += 1.0
                    if idle >= _HEARTBEAT_S:
                        idle = 0.0
                        yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                idle = 0.0
                yield _sse(item)
        finally:
            relay.forget(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _goes_on(request: Request) -> bool:
    """uvicorn waits for open responses before it shuts down: a stream must end by itself then. It
    also ends with the page's session it was opened with (a logout, or its expiry)."""
    exiting = getattr(request.app.state, "exiting", None)
    if exiting and exiting():
        return False
    session = principal_of(request).session
    sessions = auth_of(request).sessions
    return session is None or (sessions is not None and sessions.is_live(session))
