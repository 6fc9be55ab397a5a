"""A greedy IoU tracker with per-track temporal smoothing of the class probabilities.

Track ids are small per-camera counters: they say "the same face as a moment ago", nothing about
who it is, and they are never reused while the process runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from service.pipeline.detect import Box


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: Box
    last_seen: float
    probs: np.ndarray = field(repr=False)  # smoothed class probabilities

    def top(self, labels: list[str]) -> tuple[str, float]:
        i = int(np.argmax(self.probs))
        return labels[i], float(self.probs[i])


class IouTracker:
    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.0, tau_s: float = 0.5) -> None:
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self.tau_s = tau_s
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def _smooth(self, track: Track, probs: np.ndarray, now: float) -> None:
        # Exponential moving average with a time constant rather than a per-frame factor, so the
        # smoothing means the same at 5 fps and at 30 fps.
        dt = max(0.0, now - track.last_seen)
        alpha = 1.0 if self.tau_s <= 0 else 1.0 - math.exp(-dt / self.tau_s)
        track.probs = (1.0 - alpha) * track.probs + alpha * probs

    def update(self, boxes: list[Box], probs: np.ndarray, now: float) -> tuple[list[Track], list[Track]]:
        """Match this frame's faces to tracks; returns (tracks seen now, tracks that ended)."""
        pairs = sorted(
            (
                (iou(t.box, b), tid, j)
                for tid, t in self.tracks.items()
                for j, b in enumerate(boxes)
            ),
            reverse=True,
        )  # fmt: skip
        used_tracks: set[int] = set()
        used_boxes: set[int] = set()
        seen: list[Track] = []
        for score, tid, j in pairs:
            if score < self.iou_threshold:
                break
            if tid in used_tracks or j in used_boxes:
                continue
            used_tracks.add(tid)
            used_boxes.add(j)
            track = self.tracks[tid]
            self._smooth(track, probs[j], now)
            track.box = boxes[j]
            track.last_seen = now
            seen.append(track)
        for j, box in enumerate(boxes):
            if j in used_boxes:
                continue
            track = Track(self._next_id, box, now, probs[j].copy())
            self._next_id += 1
            self.tracks[track.id] = track
            seen.append(track)
        ended = [t for t in self.tracks.values() if now - t.last_seen > self.max_age_s]
        for t in ended:
            del self.tracks[t.id]
        return seen, ended

    def end_all(self) -> list[Track]:
        ended = list(self.tracks.values())
        self.tracks.clear()
        return ended
