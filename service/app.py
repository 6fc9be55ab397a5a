"""create_app(settings): assembles the FastAPI app; its lifespan is the one owner of the Runtime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from model_store import StoreError
from service import __version__
from service.api import cameras, health, infer, login, models
from service.api.auth import Auth, AuthMiddleware
from service.api.errors import install_error_handlers
from service.api.hosts import HostGuardMiddleware
from service.api.limits import BodyLimitMiddleware, ByteBudget, RequestGuardMiddleware
from service.config import Settings
from service.dashboard import routes as dashboard
from service.models import ModelLoadError
from service.pipeline.detect import DetectorError
from service.runtime import Runtime

logger = logging.getLogger("service")
# What a start-up can fail on that the operator fixes: told in one line, not a traceback.
START_ERRORS = (ModelLoadError, StoreError, DetectorError, OSError)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(settings)
    auth = Auth(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.infer_limiter = anyio.CapacityLimiter(settings.api.max_concurrency)
        auth.verify_limiter = anyio.CapacityLimiter(1)
        try:
            # The password first: it is printed before the port opens, and a bad file stops the start.
            await anyio.to_thread.run_sync(auth.start)
            await anyio.to_thread.run_sync(runtime.start)
        except START_ERRORS as exc:
            logger.error("cannot start: %s", exc)
            app.state.start_error = exc
            await anyio.to_thread.run_sync(runtime.stop)
            raise
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(runtime.stop)

    app = FastAPI(title="fer-edge", version=__version__, lifespan=lifespan,
                  docs_url="/docs" if settings.api.docs else None, redoc_url=None)
    app.state.runtime = runtime
    app.state.auth = auth
    app.state.start_error = None
    # Whoever runs the server sets this to its exit flag, so that open event streams end on shutdown.
    app.state.exiting = lambda: False
    install_error_handlers(app)
    api = settings.api
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=api.max_upload_bytes,
        timeout_s=api.body_timeout_s,
        budget=ByteBudget(api.max_body_bytes_in_flight),
    )
    # Outside the body limits: a request without credentials is refused before its body is read.
    app.add_middleware(AuthMiddleware, auth=auth)
    # Before credentials are looked at: a rebound name or another site's form gets nothing further.
    app.add_middleware(HostGuardMiddleware, allowed=api.host_allow_list())
    # Added last, so it is the outermost of ours: it sees every status, and every exception.
    app.add_middleware(RequestGuardMiddleware, metrics=runtime.metrics)
    app.include_router(health.router)
    app.include_router(infer.router)
    app.include_router(models.router)
    app.include_router(cameras.router)
    app.include_router(dashboard.router)
    app.include_router(login.router)
    app.mount("/dashboard/static", StaticFiles(directory=dashboard.STATIC), name="dashboard-static")
    return app
