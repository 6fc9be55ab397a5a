"""One still image through decode -> detect -> crop -> classify (pure: no HTTP, no metrics)."""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass

from service.config import ApiConfig, DetectorConfig
from service.infer.imaging import ImageError, ImageProblem, PixelBudget, decode_planned, plan_decode
from service.models import LoadedModel
from service.pipeline.classify import classify
from service.pipeline.detect import Box, DetectorError, FaceDetector, detect_scaled, make_detector


@dataclass(frozen=True)
class FaceScore:
    box: Box
    label: str
    scores: dict[str, float]


@dataclass(frozen=True)
class Analysis:
    width: int
    height: int
    format: str
    faces: list[FaceScore]
    model: LoadedModel
    timings_s: dict[str, float]


def _scale_box(box: Box, factor: int, width: int, height: int) -> Box:
    x, y = min(box.x * factor, width - 1), min(box.y * factor, height - 1)
    return Box(x, y, min(box.w * factor, width - x), min(box.h * factor, height - y), box.score)


class ImageAnalyser:
    """Thread-safe: each image borrows a detector of its own from a pool (neither a cascade nor an
    onnxruntime session is used by two threads at once).

    The pool is filled here, at start-up, with one detector per image analysed at once
    (`api.max_concurrency`), so no request pays for building one (about 50 ms for YuNet's session).
    It is not tied to threads: anyio retires a worker thread after 10 s idle, so detectors kept per
    thread were built again after every quiet spell. A caller beyond the limit gets a new detector,
    which then joins the pool."""

    def __init__(self, detector: DetectorConfig, api: ApiConfig) -> None:
        self._detector_cfg = detector
        self._api = api
        self._idle: queue.SimpleQueue[FaceDetector] = queue.SimpleQueue()
        self.budget = PixelBudget(api.max_decode_pixels)
        try:
            for _ in range(api.max_concurrency):
                self._idle.put(make_detector(detector))
        except DetectorError:
            # A detector config that cannot load fails where the operator is told in one line: the
            # cameras' start-up, or the request's answer, as before.
            pass

    @contextlib.contextmanager
    def _detector(self) -> Iterator[FaceDetector]:
        try:
            det = self._idle.get_nowait()
        except queue.Empty:
            det = make_detector(self._detector_cfg)
        try:
            yield det
        finally:
            self._idle.put(det)

    def analyse(self, data: bytes, model: LoadedModel) -> Analysis:
        """``model`` is read once by the caller, so the request finishes on that version."""
        t0 = time.perf_counter()
        side = self._api.detect_max_side
        plan = plan_decode(data, max_pixels=self._api.max_image_pixels, max_side=self._api.max_image_side,
                           want_side=side)  # fmt: skip
        header = plan.header
        if plan.pixels > self.budget.capacity:
            raise ImageError(
                ImageProblem.TOO_LARGE,
                f"{header.width}x{header.height}{' progressive' if header.progressive else ''} needs "
                f"{plan.pixels} pixels of decode buffers, more than the {self.budget.capacity} the service "
                "decodes at once",
            )
        with self.budget.hold(plan.pixels):
            image = decode_planned(data, plan)
            t1 = time.perf_counter()
            with self._detector() as detector:
                boxes = detect_scaled(detector, image, side, side)
            t2 = time.perf_counter()
            # A reduced decode still has every face at least as large as the detector saw it.
            probs = classify(image, boxes, model)
            t3 = time.perf_counter()
            del image  # the pixels are not needed past this point
        if plan.reduction > 1:
            boxes = [_scale_box(b, plan.reduction, header.width, header.height) for b in boxes]
        faces = []
        for box, row in zip(boxes, probs, strict=True):
            i = int(row.argmax())
            faces.append(
                FaceScore(box, model.labels[i], {name: float(p) for name, p in zip(model.labels, row, strict=True)})
            )
        return Analysis(
            width=header.width,
            height=header.height,
            format=header.format,
            faces=faces,
            model=model,
            timings_s={"decode": t1 - t0, "detect": t2 - t1, "classify": t3 - t2},
        )
