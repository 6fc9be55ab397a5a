"""Zones and masks: polygons in coordinates relative to the frame (0..1), as Frigate draws them.

A polygon is written either as Frigate's string of comma-separated numbers, ``"x1,y1,x2,y2,..."``,
or as a list of ``[x, y]`` pairs. Relative coordinates survive a change of the camera's resolution.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from service.config._base import Strict
from service.config.rules import RulesConfig

ZONE_NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"

Point = tuple[float, float]


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True when the two segments share a point (touching counts: an outline may not touch itself)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True

    def on(a: Point, b: Point, c: Point, d: float) -> bool:
        return d == 0 and min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return on(q1, q2, p1, d1) or on(q1, q2, p2, d2) or on(p1, p2, q1, d3) or on(p1, p2, q2, d4)


def _parse_polygon(value: Any) -> tuple[Point, ...]:
    if isinstance(value, str):
        try:
            numbers = [float(v) for v in value.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise ValueError("a polygon string is comma-separated numbers: x1,y1,x2,y2,...") from None
        if len(numbers) % 2:
            raise ValueError("a polygon string needs an even count of numbers (x,y pairs)")
        points = list(zip(numbers[::2], numbers[1::2], strict=True))
    elif isinstance(value, list | tuple):
        points = []
        for p in value:
            if not isinstance(p, list | tuple) or len(p) != 2 or not all(isinstance(v, int | float) for v in p):
                raise ValueError("each point is a pair [x, y] of numbers")
            points.append((float(p[0]), float(p[1])))
    else:
        raise ValueError('a polygon is "x1,y1,x2,y2,..." or a list of [x, y] pairs')
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"point ({x:g}, {y:g}) is outside 0..1: coordinates are relative to the frame")
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            # Neighbouring edges share a vertex by construction; every other pair must stay apart.
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            if _segments_cross(*edges[i], *edges[j]):
                raise ValueError(f"the outline crosses itself (edges {i + 1} and {j + 1})")
    if abs(sum(_cross((0.0, 0.0), a, b) for a, b in edges)) < 1e-9:
        raise ValueError("the polygon has no area")
    return tuple(points)


Polygon = Annotated[tuple[Point, ...], BeforeValidator(_parse_polygon)]


class ZoneConfig(Strict):
    coordinates: Polygon = Field(description='the outline, relative to the frame: "x1,y1,x2,y2,..." or [[x, y], ...]')
    rules: RulesConfig | None = Field(
        None, description="rules for faces in this zone, merged over the camera's; none: the camera's rules"
    )
