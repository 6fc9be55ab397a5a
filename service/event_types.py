"""The event vocabulary, defined once: the payloads, the rule engine, Home Assistant's discovery and
the metrics' labels derive from it.

It sits outside ``service.comms`` so that ``service.metrics`` can take its labels from here while
the comms package counts into those metrics, with no import running back.
"""

from __future__ import annotations

from typing import Literal, get_args

AnomalyType = Literal["sustained_negative_affect", "abrupt_change", "camera_fault"]
AnomalyLifecycle = Literal["new", "update", "end"]
ExpressionEventType = Literal["expression_change"]
EVENT_TYPES: tuple[str, ...] = (*get_args(ExpressionEventType), *get_args(AnomalyType))
