"""GET /models and the token-protected admin routes: reload, promote, rollback."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from model_store import StoreError
from service.api.deps import AdminDep, RuntimeDep
from service.api.errors import ApiError
from service.api.schemas import PromoteRequest, RollbackRequest
from service.models import LoadedModel, PromoteError, ReloadResult
from service.runtime import Runtime

router = APIRouter()


def accuracy(model: LoadedModel) -> dict[str, float | None]:
    """The manifest's validation accuracy, named for what it measured. The service runs one pass; a
    manifest scored with flip TTA (v1's, README "The shipped model") does not say what one pass
    scores, so its figure is given as `flip_tta` and `served` is unknown rather than guessed."""
    metrics = model.manifest.metrics
    figure = model.manifest.variants[model.variant].val_accuracy if model.variant else metrics.val_accuracy
    if not metrics.tta:
        return {"served": figure, "flip_tta": None}
    # A variant's own figure says nothing about how it was taken: only the main graph's is labelled.
    return {"served": None, "flip_tta": None if model.variant else metrics.val_accuracy}


@router.get("/models")
def models(runtime: RuntimeDep) -> dict[str, Any]:
    mgr = runtime.models
    model = mgr.current
    try:
        aliases = mgr.store.aliases(mgr.cfg.name)
        versions = mgr.store.versions(mgr.cfg.name)
    except StoreError as exc:
        aliases, versions = {}, []
        store_error: str | None = str(exc)
    else:
        store_error = None
    served = None
    if model is not None:
        m = model.manifest
        served = {
            "name": model.name,
            "version": model.version,
            "model_file": model.model_file,
            "variant": model.variant,
            "sha256": model.sha256,
            "labels": model.labels,
            "input": m.input.model_dump(),
            "output": m.output.model_dump(),
            "crop_policy": m.crop_policy,
            "crop_margin": m.crop_margin,
            "val_accuracy": m.metrics.val_accuracy,
            "accuracy": accuracy(model),
            "created_at": m.created_at.isoformat(),
            "loaded_at": model.loaded_at,
        }
    return {
        "name": mgr.cfg.name,
        "alias": mgr.cfg.alias,
        "served": served,
        "aliases": aliases,
        "versions": versions,
        "last_reload": mgr.last_result.model_dump() if mgr.last_result else None,
        "store_error": store_error,
    }


def _reload_or_raise(result: ReloadResult) -> dict[str, Any]:
    if result.result == "failed":
        raise ApiError(422, "reload_failed", f"still serving v{result.version}: {result.error}")
    return result.model_dump()


async def _reload(runtime: Runtime) -> ReloadResult:
    return await anyio.to_thread.run_sync(lambda: runtime.models.check(force=True))


@router.post("/models/reload")
async def reload(runtime: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    return _reload_or_raise(await _reload(runtime))


@router.post("/models/promote")
async def promote(body: PromoteRequest, runtime: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    """Point an alias at a version once it verifies, loads and warms up; swaps when it is served."""
    try:
        moved = await anyio.to_thread.run_sync(runtime.models.promote, body.version, body.alias)
    except PromoteError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    return moved.model_dump()


@router.post("/models/rollback")
async def rollback(body: RollbackRequest, runtime: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    try:
        moved = await anyio.to_thread.run_sync(runtime.models.rollback, body.alias)
    except PromoteError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    return moved.model_dump()
