"""POST /infer: one image in, every face with its box, label and scores out."""

from __future__ import annotations

import re
import time
import uuid

import anyio
from fastapi import APIRouter, Request, Response

from service.api.deps import AnalyserDep, InferLimiterDep, MetricsDep, ModelsDep
from service.api.errors import ApiError
from service.api.schemas import FaceBox, FaceOut, ImageInfo, InferResponse, ModelRef
from service.api.upload import check_media_type, extract_image, media_type
from service.infer.analysis import Analysis
from service.models import LoadedModel

router = APIRouter()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@router.post("/infer", response_model=InferResponse)
async def infer(
    request: Request,
    response: Response,
    models: ModelsDep,
    analyser: AnalyserDep,
    limiter: InferLimiterDep,
    metrics: MetricsDep,
) -> InferResponse:
    started = time.perf_counter()
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    response.headers["X-Request-ID"] = request_id
    mime, params = media_type(request)
    check_media_type(mime)
    body = await request.body()
    read_s = time.perf_counter() - started
    # Read the model once: this request finishes on this version even if a swap happens now.
    model = models.current
    if model is None:
        raise ApiError(503, "not_ready", "no model is loaded yet")

    def work(raw: bytes, served: LoadedModel) -> Analysis:
        # Parsing a multipart or base64 body of up to the limit is CPU work: not on the event loop.
        return analyser.analyse(extract_image(raw, mime, params), served)

    analysis = await anyio.to_thread.run_sync(work, body, model, limiter=limiter)
    del body
    m = metrics.infer_seconds
    m.labels("read").observe(read_s)
    for stage, seconds in analysis.timings_s.items():
        m.labels(stage).observe(seconds)
    timings = {f"{k}": round(v * 1000, 3) for k, v in {"read": read_s, **analysis.timings_s}.items()}
    timings["total"] = round((time.perf_counter() - started) * 1000, 3)
    return InferResponse(
        request_id=request_id,
        model=ModelRef(name=model.name, version=model.version),
        model_version=model.version,
        image=ImageInfo(width=analysis.width, height=analysis.height, format=analysis.format),
        faces=[
            FaceOut(
                box=FaceBox(x=f.box.x, y=f.box.y, w=f.box.w, h=f.box.h),
                face_confidence=f.box.score,
                label=f.label,
                scores=f.scores,
            )
            for f in analysis.faces
        ],
        timings_ms=timings,
    )
