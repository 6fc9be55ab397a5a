"""What each camera's MQTT topics said over the last minutes, for the dashboard's timeline.

Kept in memory, bounded in time, in points per camera and in cameras, and made only of what MQTT
carries: labels with their scores, the privacy switch, and anomalies with their start and end.
No pixel, no crop, no track id: a page reloaded later gets the same picture, and nothing that
could tell who was in front of the camera.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

WINDOW_S = 15 * 60.0
# A label changes at most a few times a second (the tracker's dwell holds it for a second): a
# camera that flickers past this loses its oldest points first, never the service's memory.
MAX_POINTS = 2000
MAX_ANOMALIES = 200
MAX_CAMERAS = 256

# Bounds on what another gateway may make us keep: every fer-edge label, id and event type fits.
Text = Annotated[str, StringConstraints(max_length=64)]
Series = Literal["labels", "analysis", "anomalies"]


class _Kept(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelPoint(_Kept):
    """From ``t`` on, the camera's smoothed label (None: no face) had this score."""

    t: float
    label: Text | None
    score: float | None


class SwitchPoint(_Kept):
    t: float
    state: Literal["ON", "OFF"]


class AnomalySpan(_Kept):
    id: Text
    event_type: Text
    label: Text
    score: float = Field(description="the anomaly's top score so far")
    start: float
    end: float | None = Field(description="None while it is open")


class CameraTimeline(_Kept):
    labels: list[LabelPoint]
    analysis: list[SwitchPoint]
    anomalies: list[AnomalySpan]


# What is read from a payload; other fields are ignored, so any gateway's version is understood.
class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _ExpressionIn(_Read):
    label: Text | None
    score: float | None = None
    timestamp: float


class _AnalysisIn(_Read):
    state: Literal["ON", "OFF"]
    timestamp: float


class _AnomalyIn(_Read):
    kind: Literal["anomaly"]
    id: Text
    event_type: Text
    label: Text
    top_score: float
    start_time: float
    end_time: float | None = None


class _Camera:
    def __init__(self) -> None:
        self.labels: list[LabelPoint] = []
        self.analysis: list[SwitchPoint] = []
        self.anomalies: OrderedDict[str, AnomalySpan] = OrderedDict()


def _insert(points: list[Any], point: Any) -> bool:
    """Keep ``points`` in time order; False when it is already there (a retained message comes again
    after every reconnect, with the timestamp it was published with)."""
    i = bisect.bisect_left([p.t for p in points], point.t)
    if any(p == point for p in points[i:] if p.t == point.t):
        return False
    points.insert(i, point)
    del points[: max(0, len(points) - MAX_POINTS)]
    return True


def _prune(points: list[Any], since: float) -> None:
    """Drop what ended before ``since``; the last point before it stays, since its state lasts into the window."""
    first_inside = bisect.bisect_left([p.t for p in points], since)
    del points[: max(0, first_inside - 1)]


class History:
    """Not thread-safe: the relay calls it under its own lock."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._cameras: OrderedDict[str, _Camera] = OrderedDict()

    def _camera(self, camera: str) -> _Camera:
        if camera in self._cameras:
            self._cameras.move_to_end(camera)
            return self._cameras[camera]
        if len(self._cameras) >= MAX_CAMERAS:
            self._cameras.popitem(last=False)  # the camera heard from least recently
        self._cameras[camera] = _Camera()
        return self._cameras[camera]

    def add(self, camera: str, kind: str, payload: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Record a message of ``<prefix>/<camera>/<kind>`` (kind: expression, analysis or events); returns
        what changed, as the dashboard stream sends it, or None when nothing did."""
        try:
            if kind == "expression":
                e = _ExpressionIn.model_validate(payload)
                return self._point(camera, "labels", LabelPoint(t=e.timestamp, label=e.label, score=e.score), now)
            if kind == "analysis":
                a = _AnalysisIn.model_validate(payload)
                return self._point(camera, "analysis", SwitchPoint(t=a.timestamp, state=a.state), now)
            if kind == "events" and payload.get("kind") == "anomaly":
                return self._anomaly(camera, _AnomalyIn.model_validate(payload), now)
        except ValidationError:
            return None  # not a payload this page can draw; the relay still passes it on
        return None

    def _point(self, camera: str, series: Series, point: LabelPoint | SwitchPoint, now: float) -> dict[str, Any] | None:
        cam = self._camera(camera)
        points: list[Any] = cam.labels if series == "labels" else cam.analysis
        if not _insert(points, point):
            return None
        _prune(points, now - self.window_s)
        return {"type": "timeline", "camera": camera, "series": series, "item": point.model_dump()}

    def _anomaly(self, camera: str, a: _AnomalyIn, now: float) -> dict[str, Any] | None:
        cam = self._camera(camera)
        span = AnomalySpan(id=a.id, event_type=a.event_type, label=a.label, score=a.top_score, start=a.start_time,
                           end=a.end_time)  # fmt: skip
        known = cam.anomalies.get(a.id)
        if known is not None and known.end is not None and span.end is None:
            return None  # an `update` delivered again after its `end` (delivery is at least once)
        if known == span:
            return None
        cam.anomalies[a.id] = span
        cam.anomalies.move_to_end(a.id)
        while len(cam.anomalies) > MAX_ANOMALIES:
            cam.anomalies.popitem(last=False)
        self._prune_anomalies(cam, now)
        return {"type": "timeline", "camera": camera, "series": "anomalies", "item": span.model_dump()}

    def _prune_anomalies(self, cam: _Camera, now: float) -> None:
        since = now - self.window_s
        for key in [k for k, s in cam.anomalies.items() if s.end is not None and s.end < since]:
            del cam.anomalies[key]

    def snapshot(self, now: float) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for camera, cam in self._cameras.items():
            _prune(cam.labels, now - self.window_s)
            _prune(cam.analysis, now - self.window_s)
            self._prune_anomalies(cam, now)
            timeline = CameraTimeline(labels=cam.labels, analysis=cam.analysis, anomalies=list(cam.anomalies.values()))
            out[camera] = timeline.model_dump()
        return out
