"""Expression changes and anomaly rules for one camera: pure state machines fed with times.

Nothing here reads a clock, touches metrics or publishes; the runner passes ``now`` in and sends
what comes out, which is what lets the tests script a sequence and check the exact lifecycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.comms.payloads import AnomalyEvent, AnomalyType, Event, ExpressionChange, ExpressionState, new_event_id
from service.config import RulesConfig, TrackingConfig
from service.pipeline.track import Track


@dataclass
class _Open:
    """An anomaly between its `new` and its `end`."""

    id: str
    event_type: AnomalyType
    label: str
    start_time: float
    top_score: float
    track_id: int | None
    previous_label: str | None = None
    last_score: float = 0.0
    clear_since: float | None = None


@dataclass
class _TrackState:
    label: str | None = None
    candidate: str | None = None
    candidate_since: float = 0.0
    negative_since: float | None = None
    last_from_time: float | None = None
    last_from_label: str | None = None
    open: dict[str, _Open] = field(default_factory=dict)


class RuleEngine:
    def __init__(self, camera: str, rules: RulesConfig, tracking: TrackingConfig, labels: list[str]) -> None:
        self.camera = camera
        self.rules = rules
        self.dwell_s = tracking.min_dwell_s
        self.model_version: int | None = None
        self._tracks: dict[int, _TrackState] = {}
        self._fault: _Open | None = None
        self._state: ExpressionState | None = None
        self.set_labels(labels)

    def set_labels(self, labels: list[str]) -> None:
        """Resolve rule labels by name against the served model (a new version may reorder them)."""
        self.labels = list(labels)
        index = {name: i for i, name in enumerate(self.labels)}
        self._neg = [index[n] for n in self.rules.sustained_negative.labels if n in index]
        self._from = {n for n in self.rules.abrupt_change.from_labels if n in index}
        self._to = {n for n in self.rules.abrupt_change.to_labels if n in index}

    def unknown_labels(self) -> list[str]:
        r = self.rules
        named = [*r.sustained_negative.labels, *r.abrupt_change.from_labels, *r.abrupt_change.to_labels]
        return sorted({n for n in named if n not in self.labels})

    # -- anomalies -------------------------------------------------------------------------------

    def _new(self, event_type: AnomalyType, label: str, score: float, start: float, track_id: int | None,
             previous_label: str | None = None) -> tuple[_Open, AnomalyEvent]:  # fmt: skip
        o = _Open(new_event_id(start), event_type, label, start, score, track_id, previous_label, score)
        return o, self._anomaly(o, "new", score)

    def _anomaly(
        self, o: _Open, kind: Literal["new", "update", "end"], score: float, end_time: float | None = None
    ) -> AnomalyEvent:
        return AnomalyEvent(
            type=kind,
            id=o.id,
            camera=self.camera,
            event_type=o.event_type,
            label=o.label,
            score=round(score, 4),
            top_score=round(o.top_score, 4),
            start_time=o.start_time,
            end_time=end_time,
            track_id=o.track_id,
            previous_label=o.previous_label,
            model_version=self.model_version,
        )

    def _sustained(self, t: Track, st: _TrackState, now: float, out: list[Event]) -> None:
        rule = self.rules.sustained_negative
        if not rule.enabled or not self._neg:
            return
        score = float(sum(t.probs[i] for i in self._neg))
        label = self.labels[max(self._neg, key=lambda i: t.probs[i])]
        o = st.open.get("sustained_negative_affect")
        if score >= rule.threshold:
            if st.negative_since is None:
                st.negative_since = now
            if o is None:
                if now - st.negative_since >= rule.min_duration_s:
                    o, ev = self._new("sustained_negative_affect", label, score, st.negative_since, t.id)
                    st.open[o.event_type] = o
                    out.append(ev)
                return
            o.clear_since = None
            o.last_score = score
            if score >= o.top_score + rule.update_delta:
                o.top_score, o.label = score, label
                out.append(self._anomaly(o, "update", score))
            return
        st.negative_since = None
        if o is not None:
            o.last_score = score
            if o.clear_since is None:
                o.clear_since = now
            if now - o.clear_since >= rule.clear_s:
                del st.open[o.event_type]
                out.append(self._anomaly(o, "end", score, now))

    def _abrupt(self, t: Track, st: _TrackState, label: str, prob: float, now: float, out: list[Event]) -> None:
        rule = self.rules.abrupt_change
        if not rule.enabled or not self._from or not self._to:
            return
        o = st.open.get("abrupt_change")
        if label in self._from:
            st.last_from_time, st.last_from_label = now, label
        holds = label in self._to and prob >= rule.min_score
        if o is None:
            if holds and st.last_from_time is not None and now - st.last_from_time <= rule.window_s:
                o, ev = self._new("abrupt_change", label, prob, now, t.id, st.last_from_label)
                st.open[o.event_type] = o
                st.last_from_time = None
                out.append(ev)
            return
        o.last_score = prob if holds else 0.0
        if holds:
            o.clear_since = None
            if prob > o.top_score:
                o.top_score = prob
            return
        if o.clear_since is None:
            o.clear_since = now
        if now - o.clear_since >= rule.hold_s:
            del st.open[o.event_type]
            out.append(self._anomaly(o, "end", prob, now))

    def camera_status(self, online: bool, reason: str | None, now: float) -> list[Event]:
        """Open a camera_fault when the camera goes offline, end it when frames come back."""
        if not self.rules.camera_fault.enabled:
            return []
        if not online and self._fault is None:
            self._fault, ev = self._new("camera_fault", reason or "offline", 1.0, now, None)
            return [ev]
        if online and self._fault is not None:
            o, self._fault = self._fault, None
            return [self._anomaly(o, "end", 0.0, now)]
        return []

    # -- per frame -------------------------------------------------------------------------------

    def _expression(self, t: Track, st: _TrackState, label: str, prob: float, now: float, out: list[Event]) -> None:
        # Publish on change with a minimum dwell, never per frame (DESIGN §3).
        if label == st.label:
            st.candidate = None
            return
        if label != st.candidate:
            st.candidate, st.candidate_since = label, now
        if now - st.candidate_since >= self.dwell_s:
            out.append(
                ExpressionChange(
                    id=new_event_id(now),
                    camera=self.camera,
                    track_id=t.id,
                    label=label,
                    previous_label=st.label,
                    score=round(prob, 4),
                    timestamp=now,
                    model_version=self.model_version,
                )
            )
            st.label, st.candidate = label, None

    def on_frame(self, seen: list[Track], ended: list[Track], now: float) -> list[Event]:
        out: list[Event] = []
        for t in seen:
            st = self._tracks.setdefault(t.id, _TrackState())
            label, prob = t.top(self.labels)
            self._expression(t, st, label, prob, now, out)
            self._sustained(t, st, now, out)
            self._abrupt(t, st, label, prob, now, out)
        for t in ended:
            out.extend(self._end_track(t.id, now))
        return out

    def _end_track(self, track_id: int, now: float) -> list[Event]:
        st = self._tracks.pop(track_id, None)
        if st is None:
            return []
        return [self._anomaly(o, "end", o.last_score, now) for o in st.open.values()]

    def close(self, now: float) -> list[Event]:
        """End every open anomaly (shutdown), so no dashboard is left with a dangling event."""
        out: list[Event] = []
        for track_id in list(self._tracks):
            out.extend(self._end_track(track_id, now))
        if self._fault is not None:
            o, self._fault = self._fault, None
            out.append(self._anomaly(o, "end", 0.0, now))
        return out

    def expression_state(self, seen: list[Track], now: float) -> ExpressionState | None:
        """The retained state, returned only when its label or the face it follows changed."""
        published = [(t, self._tracks[t.id].label) for t in seen if t.id in self._tracks and self._tracks[t.id].label]
        if published:
            track, label = max(published, key=lambda p: p[0].box.area)
            score: float | None = round(float(track.probs[self.labels.index(label)]), 4)
            track_id: int | None = track.id
        else:
            label, score, track_id = None, None, None
        if self._state is not None and self._state.label == label and self._state.track_id == track_id:
            return None
        self._state = ExpressionState(
            camera=self.camera,
            label=label,
            score=score,
            track_id=track_id,
            faces=len(seen),
            timestamp=now,
            model_version=self.model_version,
        )
        return self._state
