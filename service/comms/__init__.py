"""Messaging: the Publisher protocol, payload models, topics, the MQTT implementation and its outbox."""

from service.comms.base import MemoryPublisher, Publisher
from service.comms.outbox import Outbox
from service.comms.payloads import (
    SCHEMA_VERSION,
    AnalysisState,
    AnomalyEvent,
    Availability,
    CameraStatus,
    Event,
    ExpressionChange,
    ExpressionState,
)
from service.comms.topics import Topics

__all__ = [
    "SCHEMA_VERSION",
    "AnalysisState",
    "AnomalyEvent",
    "Availability",
    "CameraStatus",
    "Event",
    "ExpressionChange",
    "ExpressionState",
    "MemoryPublisher",
    "Outbox",
    "Publisher",
    "Topics",
]
