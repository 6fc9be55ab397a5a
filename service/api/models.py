"""GET /models and the token-protected admin routes: reload, promote, rollback."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from service.api.deps import AdminDep, ModelsDep
from service.api.errors import ApiError
from service.api.schemas import PromoteRequest, RollbackRequest
from service.models import LoadedModel

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
def models(mgr: ModelsDep) -> dict[str, Any]:
    model = mgr.current
    listing = mgr.listing()
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
        "name": mgr.name,
        "alias": mgr.alias,
        "served": served,
        "aliases": listing.aliases,
        "versions": listing.versions,
        "last_reload": mgr.last_result.model_dump() if mgr.last_result else None,
        "store_error": listing.error,
    }


@router.post("/models/reload")
async def reload(mgr: ModelsDep, _: AdminDep) -> dict[str, Any]:
    result = await anyio.to_thread.run_sync(lambda: mgr.check(force=True))
    if result.result == "failed":
        raise ApiError(422, "reload_failed", f"still serving v{result.version}: {result.error}")
    return result.model_dump()


@router.post("/models/promote")
async def promote(body: PromoteRequest, mgr: ModelsDep, _: AdminDep) -> dict[str, Any]:
    """Point an alias at a version once it verifies, loads and warms up; swaps when it is served.
    A refusal is a PromoteError, answered by service/api/errors.py."""
    moved = await anyio.to_thread.run_sync(mgr.promote, body.version, body.alias)
    return moved.model_dump()


@router.post("/models/rollback")
async def rollback(body: RollbackRequest, mgr: ModelsDep, _: AdminDep) -> dict[str, Any]:
    moved = await anyio.to_thread.run_sync(mgr.rollback, body.alias)
    return moved.model_dump()
