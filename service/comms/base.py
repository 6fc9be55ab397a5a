"""The transport interface the service sees: typed payloads out; in, the messages of the topics it
subscribes to, whose filters come from its ``topics``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from service.comms.payloads import AnalysisState, CameraStatus, Event, ExpressionState, GatewayModel
from service.comms.topics import Topics

# (topic, payload), called on the transport's own thread: it must not block.
MessageHandler = Callable[[str, bytes], None]


class Publisher(Protocol):
    @property
    def topics(self) -> Topics: ...

    @property
    def connected(self) -> bool: ...

    @property
    def camera_clashes(self) -> dict[str, list[str]]:
        """Camera id -> the other gateways on the broker that claim it too (fleet only)."""
        ...

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Call ``handler`` for every message matching ``topic_filter``, retained ones included, from now
        on and again after every reconnect."""
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

    def set_model_state(self, state: GatewayModel) -> None:
        """Retained: what this gateway serves after each rollout step (fleet only)."""
        ...

    def stop(self) -> None:
        """Announce `stopped` and flush what can be flushed."""
        ...


class MemoryPublisher:
    """Keeps everything in lists: for MQTT-less runs (``mqtt.enabled: false``), the benchmarks and tests."""

    def __init__(self) -> None:
        # Only ever used to name subscriptions, which a publisher without a broker ignores.
        self.topics = Topics()
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self.expressions: list[ExpressionState] = []
        self.statuses: list[CameraStatus] = []
        self.analysis: list[AnalysisState] = []
        self.labels: list[str] = []
        self.model_states: list[GatewayModel] = []
        self.max_kept = 10_000

    @property
    def connected(self) -> bool:
        return False

    @property
    def camera_clashes(self) -> dict[str, list[str]]:
        return {}

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Without a broker nothing ever arrives, so there is nothing to call ``handler`` for."""

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

    def set_model_state(self, state: GatewayModel) -> None:
        self._keep(self.model_states, state)

    def stop(self) -> None:
        pass
