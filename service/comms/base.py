"""The transport interface the pipeline sees: typed payloads in, no topic strings."""

from __future__ import annotations

import threading
from typing import Protocol

from service.comms.payloads import AnalysisState, CameraStatus, Event, ExpressionState


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def camera_clashes(self) -> dict[str, list[str]]:
        """Camera id -> the other gateways on the broker that claim it too (fleet only)."""
        ...

    def start(self) -> None: ...

    def publish_event(self, event: Event) -> None:
        """Durable and ordered per camera; must not block the caller on the network."""
        ...

    def set_expression(self, state: ExpressionState) -> None:
        """Retained; the latest value wins and is re-sent after every reconnect."""
        ...

    def set_camera_status(self, status: CameraStatus) -> None: ...

    def set_analysis_state(self, state: AnalysisState) -> None:
        """Retained, like the camera status."""
        ...

    def set_labels(self, labels: list[str]) -> None:
        """The served model's labels, for Home Assistant's enum sensor."""
        ...

    def stop(self) -> None:
        """Announce `stopped` and flush what can be flushed."""
        ...


class MemoryPublisher:
    """Keeps everything in lists: for MQTT-less runs, the benchmarks and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self.expressions: list[ExpressionState] = []
        self.statuses: list[CameraStatus] = []
        self.analysis: list[AnalysisState] = []
        self.labels: list[str] = []
        self.max_kept = 10_000

    @property
    def connected(self) -> bool:
        return False

    @property
    def camera_clashes(self) -> dict[str, list[str]]:
        return {}

    def start(self) -> None:
        pass

    def _keep(self, items: list, item: object) -> None:
        with self._lock:
            items.append(item)
            del items[: max(0, len(items) - self.max_kept)]

    def publish_event(self, event: Event) -> None:
        self._keep(self.events, event)

    def set_expression(self, state: ExpressionState) -> None:
        self._keep(self.expressions, state)

    def set_camera_status(self, status: CameraStatus) -> None:
        self._keep(self.statuses, status)

    def set_analysis_state(self, state: AnalysisState) -> None:
        self._keep(self.analysis, state)

    def set_labels(self, labels: list[str]) -> None:
        self.labels = list(labels)

    def stop(self) -> None:
        pass
