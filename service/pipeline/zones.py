"""Masks and zones of one camera, between the detector and the classifier.

A face is placed by the centre of its box, in coordinates relative to the frame. A face inside a
mask, or outside every zone when the camera has zones, is dropped here: it is never classified,
tracked or published. The faces kept carry the names of the zones they are in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.config.zones import Point, ZoneConfig
from service.pipeline.detect import Box


def inside(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd ray casting; a point exactly on an edge may land on either side."""
    x, y = point
    hit = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            hit = not hit
        j = i
    return hit


@dataclass(frozen=True, slots=True)
class Placed:
    """The faces to analyse, and how many were dropped and why."""

    boxes: list[Box]
    masked: int = 0
    outside_zones: int = 0


class ZoneFilter:
    def __init__(self, masks: Sequence[Sequence[Point]], zones: Mapping[str, ZoneConfig]) -> None:
        self.masks = [tuple(m) for m in masks]
        self.zones = {name: z.coordinates for name, z in zones.items()}

    @property
    def active(self) -> bool:
        return bool(self.masks or self.zones)

    def zones_of(self, box: Box, width: int, height: int) -> tuple[str, ...]:
        """The zones the box's centre is in, in config order (Frigate's ``current_zones``)."""
        centre = _centre(box, width, height)
        return tuple(name for name, polygon in self.zones.items() if inside(centre, polygon))

    def place(self, boxes: Sequence[Box], width: int, height: int) -> Placed:
        if not self.active:
            return Placed(list(boxes))
        kept: list[Box] = []
        masked = outside = 0
        for box in boxes:
            if any(inside(_centre(box, width, height), m) for m in self.masks):
                masked += 1
            elif self.zones and not self.zones_of(box, width, height):
                outside += 1
            else:
                kept.append(box)
        return Placed(kept, masked, outside)


def _centre(box: Box, width: int, height: int) -> Point:
    return (box.x + box.w / 2) / width, (box.y + box.h / 2) / height
