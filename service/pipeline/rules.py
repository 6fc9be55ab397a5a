"""Expression changes and anomaly rules for one camera: pure state machines fed with times.

Nothing here reads a clock, touches metrics or publishes; the runner passes ``now`` in and sends
what comes out, which is what lets the tests script a sequence and check the exact lifecycle.

A face in a zone with its own rules is judged by that zone's rules (the first such zone in config
order when it is in several), any other face by the camera's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service.comms.payloads import AnomalyEvent, Event, ExpressionChange, ExpressionState, new_event_id
from service.config import RulesConfig, TrackingConfig
from service.event_types import AnomalyLifecycle, AnomalyType
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
    # The camera's recent label when this track started: a re-entering face continues from it.
    inherited: str | None = None
    candidate: str | None = None
    candidate_since: float = 0.0
    negative_since: float | None = None
    last_from_time: float | None = None
    last_from_label: str | None = None
    open: dict[str, _Open] = field(default_factory=dict)
    zones: tuple[str, ...] = ()


@dataclass(frozen=True)
class _RuleSet:
    """One scope's rules with their labels resolved against the served model."""

    rules: RulesConfig
    neg: list[int]
    from_labels: set[str]
    to_labels: set[str]


def _in_scope(required: list[str], zones: tuple[str, ...]) -> bool:
    return not required or any(z in required for z in zones)


class RuleEngine:
    def __init__(
        self,
        camera: str,
        rules: RulesConfig,
        tracking: TrackingConfig,
        labels: list[str],
        zone_rules: Mapping[str, RulesConfig] | None = None,
    ) -> None:
        self.camera = camera
        self.rules = rules
        self.zone_rules = dict(zone_rules or {})
        self.dwell_s = tracking.min_dwell_s
        self.reentry_window_s = tracking.reentry_window_s
        # The label this camera last reported, and when a face last held it.
        self._last_label: str | None = None
        self._last_label_at = 0.0
        self.model_version: int | None = None
        self._tracks: dict[int, _TrackState] = {}
        self._fault: _Open | None = None
        self._state: ExpressionState | None = None
        self.set_labels(labels)

    def set_labels(self, labels: list[str]) -> None:
        """Resolve rule labels by name against the served model (a new version may reorder them)."""
        self.labels = list(labels)
        index = {name: i for i, name in enumerate(self.labels)}

        def resolve(r: RulesConfig) -> _RuleSet:
            return _RuleSet(
                r,
                [index[n] for n in r.sustained_negative.labels if n in index],
                {n for n in r.abrupt_change.from_labels if n in index},
                {n for n in r.abrupt_change.to_labels if n in index},
            )

        self._camera_set = resolve(self.rules)
        self._zone_sets = {zone: resolve(r) for zone, r in self.zone_rules.items()}

    def _rules_for(self, zones: tuple[str, ...]) -> _RuleSet:
        return next((self._zone_sets[z] for z in zones if z in self._zone_sets), self._camera_set)

    def unknown_labels(self) -> list[str]:
        named: set[str] = set()
        for r in [self.rules, *self.zone_rules.values()]:
            named |= {*r.sustained_negative.labels, *r.abrupt_change.from_labels, *r.abrupt_change.to_labels}
        return sorted(n for n in named if n not in self.labels)

    # -- anomalies -------------------------------------------------------------------------------

    def _new(self, event_type: AnomalyType, label: str, score: float, start: float, track_id: int | None,
             previous_label: str | None = None, zones: tuple[str, ...] = ()) -> tuple[_Open, AnomalyEvent]:  # fmt: skip
        o = _Open(new_event_id(start), event_type, label, start, score, track_id, previous_label, score)
        return o, self._anomaly(o, "new", score, zones=zones)

    def _anomaly(
        self,
        o: _Open,
        kind: AnomalyLifecycle,
        score: float,
        end_time: float | None = None,
        zones: tuple[str, ...] = (),
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
            current_zones=list(zones),
        )

    def _sustained(self, t: Track, st: _TrackState, now: float, out: list[Event]) -> None:
        rs = self._rules_for(st.zones)
        rule = rs.rules.sustained_negative
        if not rule.enabled or not rs.neg:
            return
        # A face outside the rule's zones counts as not negative, so an open event clears as it leaves.
        score = float(sum(t.probs[i] for i in rs.neg)) if _in_scope(rule.required_zones, st.zones) else 0.0
        label = self.labels[max(rs.neg, key=lambda i: t.probs[i])]
        o = st.open.get("sustained_negative_affect")
        if score >= rule.threshold:
            if st.negative_since is None:
                st.negative_since = now
            if o is None:
                if now - st.negative_since >= rule.min_duration_s:
                    o, ev = self._new("sustained_negative_affect", label, score, st.negative_since, t.id,
                                      zones=st.zones)  # fmt: skip
                    st.open[o.event_type] = o
                    out.append(ev)
                return
            o.clear_since = None
            o.last_score = score
            if score >= o.top_score + rule.update_delta:
                o.top_score, o.label = score, label
                out.append(self._anomaly(o, "update", score, zones=st.zones))
            return
        st.negative_since = None
        if o is not None:
            o.last_score = score
            if o.clear_since is None:
                o.clear_since = now
            if now - o.clear_since >= rule.clear_s:
                del st.open[o.event_type]
                out.append(self._anomaly(o, "end", score, now, st.zones))

    def _abrupt(self, t: Track, st: _TrackState, label: str, prob: float, now: float, out: list[Event]) -> None:
        rs = self._rules_for(st.zones)
        rule = rs.rules.abrupt_change
        if not rule.enabled or not rs.from_labels or not rs.to_labels:
            return
        o = st.open.get("abrupt_change")
        in_scope = _in_scope(rule.required_zones, st.zones)
        if in_scope and label in rs.from_labels:
            st.last_from_time, st.last_from_label = now, label
        holds = in_scope and label in rs.to_labels and prob >= rule.min_score
        if o is None:
            if holds and st.last_from_time is not None and now - st.last_from_time <= rule.window_s:
                o, ev = self._new("abrupt_change", label, prob, now, t.id, st.last_from_label, st.zones)
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
            out.append(self._anomaly(o, "end", prob, now, st.zones))

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
        # Publish on change with a minimum dwell, never per frame, as Frigate publishes its per-camera state.
        if label == st.label:
            st.candidate = None
            return
        if label != st.candidate:
            st.candidate, st.candidate_since = label, now
        if now - st.candidate_since >= self.dwell_s:
            if st.label is None and label == st.inherited:
                # The same face back in view (a new track, as the tracker cannot know): not a change.
                st.label, st.candidate = label, None
                return
            out.append(
                ExpressionChange(
                    id=new_event_id(now),
                    camera=self.camera,
                    track_id=t.id,
                    label=label,
                    previous_label=st.label if st.label is not None else st.inherited,
                    score=round(prob, 4),
                    timestamp=now,
                    model_version=self.model_version,
                    current_zones=list(st.zones),
                )
            )
            st.label, st.candidate = label, None

    def on_frame(
        self, seen: list[Track], ended: list[Track], now: float, zones: Mapping[int, tuple[str, ...]] | None = None
    ) -> list[Event]:
        """``zones``: the zones each seen track's face is in now, by track id (none without zones)."""
        out: list[Event] = []
        for t in seen:
            st = self._tracks.get(t.id)
            if st is None:
                st = self._tracks[t.id] = _TrackState(inherited=self._recent_label(now))
            st.zones = zones.get(t.id, ()) if zones else ()
            label, prob = t.top(self.labels)
            self._expression(t, st, label, prob, now, out)
            if st.label is not None:
                self._last_label, self._last_label_at = st.label, now
            self._sustained(t, st, now, out)
            self._abrupt(t, st, label, prob, now, out)
        for t in ended:
            out.extend(self._end_track(t.id, now))
        return out

    def _recent_label(self, now: float) -> str | None:
        if self._last_label is None or self.reentry_window_s <= 0 or now - self._last_label_at > self.reentry_window_s:
            return None
        return self._last_label

    def _end_track(self, track_id: int, now: float) -> list[Event]:
        st = self._tracks.pop(track_id, None)
        if st is None:
            return []
        return [self._anomaly(o, "end", o.last_score, now, st.zones) for o in st.open.values()]

    def close(self, now: float) -> list[Event]:
        """End every open anomaly (shutdown, analysis switched off), so no dashboard is left with a dangling event."""
        out: list[Event] = []
        for track_id in list(self._tracks):
            out.extend(self._end_track(track_id, now))
        if self._fault is not None:
            o, self._fault = self._fault, None
            out.append(self._anomaly(o, "end", 0.0, now))
        # The next expression_state is published whatever it says: the faces are gone.
        self._state = None
        return out

    def expression_state(self, seen: list[Track], now: float) -> ExpressionState | None:
        """The retained state, returned only when its label or the face it follows changed."""
        published = [(t, label) for t in seen if t.id in self._tracks and (label := self._tracks[t.id].label)]
        zones: list[str] = []
        if published:
            track, label = max(published, key=lambda p: p[0].box.area)
            score: float | None = round(float(track.probs[self.labels.index(label)]), 4)
            track_id: int | None = track.id
            zones = list(self._tracks[track.id].zones)
        else:
            label, score, track_id = None, None, None
        s = self._state
        if s is not None and (s.label, s.track_id, s.current_zones) == (label, track_id, zones):
            return None
        self._state = ExpressionState(
            camera=self.camera,
            label=label,
            score=score,
            track_id=track_id,
            faces=len(seen),
            timestamp=now,
            model_version=self.model_version,
            current_zones=zones,
        )
        return self._state
