"""The cameras: those configured, the pipelines that run the enabled ones, and each one's privacy switch.

The runtime builds the pipelines and hands them over here; the HTTP routes and the broker's switch
commands read and switch cameras through this registry alone, without the rest of the runtime.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Any

from service.analysis_switch import AnalysisSwitches
from service.comms.base import Publisher
from service.comms.payloads import AnalysisState
from service.config import CameraConfig
from service.pipeline.runner import CameraPipeline

logger = logging.getLogger(__name__)


class CameraProblem(Enum):
    """Why a camera cannot be switched. The HTTP answer to each is chosen at the API edge
    (service/api/errors.py)."""

    UNKNOWN = "unknown"
    """No camera of that id in the config."""
    DISABLED = "disabled"
    """Configured with ``enabled: false``, so it has no pipeline."""
    NOT_RUNNING = "not_running"
    """Its pipeline is not there yet, or no longer: the service is starting or stopping."""


class CameraError(Exception):
    """A camera that cannot be switched: ``kind`` says why."""

    def __init__(self, kind: CameraProblem, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class CameraRegistry:
    def __init__(self, configured: Sequence[CameraConfig]) -> None:
        self.configured: tuple[CameraConfig, ...] = tuple(configured)
        self.pipelines: list[CameraPipeline] = []
        self._switches: AnalysisSwitches | None = None
        self._publisher: Publisher | None = None
        # Switches are applied one at a time, and not while the pipelines are being added or stopped.
        self._lock = threading.Lock()
        self._closed = False

    def find(self, camera: str) -> CameraConfig | None:
        return next((c for c in self.configured if c.id == camera), None)

    def statuses(self) -> dict[str, str]:
        """Each running camera's `online`, `connecting` or `offline`."""
        return {p.cam.id: p.snapshot()["status"] for p in self.pipelines}

    def listing(self) -> list[dict[str, Any]]:
        """Every configured camera, in config order: a running one's snapshot, else that it is disabled."""
        running = {p.cam.id: p.snapshot() for p in self.pipelines}
        out: list[dict[str, Any]] = []
        for cam in self.configured:
            if cam.id in running:
                out.append(running[cam.id])
            else:
                out.append({"id": cam.id, "name": cam.name or cam.id, "enabled": cam.enabled, "status": "disabled"})
        return out

    @contextlib.contextmanager
    def opening(self, switches: AnalysisSwitches, publisher: Publisher) -> Iterator[None]:
        """Held while the runtime starts the publisher and adds the pipelines: a switch command that comes
        with the broker's first connection waits for its camera instead of being lost."""
        with self._lock:
            self._switches, self._publisher = switches, publisher
            yield

    def add(self, pipeline: CameraPipeline) -> None:
        """Inside `opening`: the pipeline starts, or stays paused where the switch on disk says OFF."""
        assert self._switches is not None, "add() is called inside opening()"
        self.pipelines.append(pipeline)
        self._apply(pipeline, self._switches.is_on(pipeline.cam.id))

    def set_analysis(self, camera: str, on: bool) -> AnalysisState:
        """Switch a camera's analysis; the choice is on disk before it takes effect. Blocks while a
        paused camera's threads are joined: call it from a worker thread."""
        configured = self.find(camera)
        if configured is None:
            raise CameraError(CameraProblem.UNKNOWN, f"no camera {camera!r} in the config")
        if not configured.enabled:
            message = f"camera {camera!r} is disabled in the config (cameras[].enabled)"
            raise CameraError(CameraProblem.DISABLED, message)
        with self._lock:
            pipeline = next((p for p in self.pipelines if p.cam.id == camera), None)
            if pipeline is None or self._switches is None or self._closed:
                raise CameraError(CameraProblem.NOT_RUNNING, "the service is starting or stopping")
            self._switches.set(camera, on)
            state = self._apply(pipeline, on)
        logger.info("camera %s: analysis %s", camera, state.state)
        return state

    def _apply(self, pipeline: CameraPipeline, on: bool) -> AnalysisState:
        assert self._publisher is not None
        if on:
            pipeline.start()
        else:
            pipeline.pause()
        state = AnalysisState(camera=pipeline.cam.id, state="ON" if on else "OFF", timestamp=time.time())
        self._publisher.set_analysis_state(state)
        return state

    def close(self) -> None:
        """No switch takes effect after this: the runtime is about to stop the pipelines."""
        with self._lock:
            self._closed = True
