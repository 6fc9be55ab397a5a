"""p50 and p95 per camera and stage, read from the service's own `fer_stage_seconds` histogram.

The quantiles are those of the last minute, computed as Prometheus' `histogram_quantile` does
(linear within a bucket), so the page and a Grafana panel agree.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry

from service.metrics import PIPELINE_STAGES

Buckets = dict[tuple[str, str], list[tuple[float, float]]]  # (camera, stage) -> [(le, cumulative count)]


def read_buckets(registry: CollectorRegistry, metric: str = "fer_stage_seconds") -> Buckets:
    out: Buckets = {}
    for family in registry.collect():
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name != f"{metric}_bucket":
                continue
            key = (sample.labels["camera"], sample.labels["stage"])
            out.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
    for rows in out.values():
        rows.sort()
    return out


def quantile(q: float, rows: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` on cumulative buckets ending in +Inf; None when they are empty."""
    if not rows or rows[-1][1] <= 0:
        return None
    rank = q * rows[-1][1]
    lower, below = 0.0, 0.0
    for le, count in rows:
        if count >= rank:
            if math.isinf(le):
                return lower  # above the last finite bucket: its bound is all that is known
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


class LatencyWindow:
    def __init__(self, registry: CollectorRegistry, window_s: float = 60.0, every_s: float = 5.0) -> None:
        self.registry = registry
        self.window_s = window_s
        self.every_s = every_s
        self._lock = threading.Lock()
        self._history: deque[tuple[float, Buckets]] = deque()

    def summary(self, now: float | None = None) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """{camera: {stage: {p50_ms, p95_ms, count}}} over about the last window_s; only the stages that
        ran, so a camera that never analysed a frame maps to {}."""
        now = time.monotonic() if now is None else now
        current = read_buckets(self.registry)
        with self._lock:
            if not self._history or now - self._history[-1][0] >= self.every_s:
                self._history.append((now, current))
            while len(self._history) > 1 and now - self._history[1][0] >= self.window_s:
                self._history.popleft()
            base = self._history[0][1]
        out: dict[str, dict[str, dict[str, float | int | None]]] = {}
        order = {stage: i for i, stage in enumerate(PIPELINE_STAGES)}
        for (camera, stage), rows in sorted(current.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
            before = dict(base.get((camera, stage), []))
            delta = [(le, count - before.get(le, 0.0)) for le, count in rows]
            if not delta or delta[-1][1] <= 0:
                # Nothing new in the window (a paused camera): the figures since start say more than nothing.
                delta = rows
            stages = out.setdefault(camera, {})
            p50, p95 = quantile(0.5, delta), quantile(0.95, delta)
            if p50 is None:
                # A stage that never ran (a camera that never came online): a row of dashes says nothing.
                continue
            stages[stage] = {
                "p50_ms": round(p50 * 1000, 3),
                "p95_ms": None if p95 is None else round(p95 * 1000, 3),
                "count": int(delta[-1][1]),
            }
        return out
