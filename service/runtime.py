"""Builds and owns every running component; the only place that wires them.

Start order: model (fail fast: nothing to serve without it; in a fleet, fetched first when the
local cache is empty), publisher (never blocks on the broker), camera pipelines, model watcher and
fleet model sync. Stop order is the reverse, so the pipelines' last events and `offline` statuses
are still in the outbox when the publisher flushes it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CollectorRegistry

from service.analysis_switch import AnalysisSwitches
from service.cameras import CameraError, CameraRegistry
from service.comms.base import MemoryPublisher, Publisher
from service.comms.mqtt import MqttPublisher, client_id_secret, gateway_client_id
from service.comms.outbox import Outbox
from service.comms.payloads import SWITCH_PAYLOADS
from service.config import DEMO_SOURCE, Settings
from service.dashboard.latency import LatencyWindow
from service.dashboard.relay import EventRelay
from service.demo import ensure_demo_clip
from service.fleet import ModelSync
from service.infer.analysis import ImageAnalyser
from service.metrics import Metrics
from service.models import LoadedModel, ModelManager
from service.pipeline.runner import CameraPipeline

logger = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        enabled = [c for c in settings.cameras if c.enabled]
        self.metrics = Metrics(self.registry, [c.id for c in enabled])
        if settings.distribution.enabled:
            # The local cache store starts empty on a new gateway; the manager needs its root.
            Path(settings.model.store).mkdir(parents=True, exist_ok=True)
        self.models = ModelManager(settings.model, self.metrics, on_swap=self._on_swap)
        self.sync: ModelSync | None = None
        if settings.distribution.enabled:
            self.sync = ModelSync(settings.distribution, settings.model, settings.gateway_id, self.models, self.metrics,
                                  settings.mqtt if settings.mqtt.enabled else None)
        # Built in start(): it opens the outbox file, and construction must not touch the disk.
        self.publisher: Publisher = MemoryPublisher()
        self.analyser = ImageAnalyser(settings.detector, settings.api)
        self.cameras = CameraRegistry(settings.cameras)
        # One thread applies switch commands in arrival order: pausing joins the camera's threads,
        # which must not happen on the broker's network thread.
        self._switching = ThreadPoolExecutor(1, thread_name_prefix="analysis-switch")
        self.latency = LatencyWindow(self.registry)
        # The dashboard's subscriber: built in start(), none when MQTT is off.
        self.relay: EventRelay | None = None
        self.started_at: float | None = None
        self._stopped = False

    def _make_publisher(self, client_id: str) -> Publisher:
        s = self.settings
        if not s.mqtt.enabled:
            return MemoryPublisher()
        outbox = Outbox(Path(s.outbox_path), s.mqtt.outbox.max_messages, self.metrics)
        cameras = [(c.id, c.name or c.id) for c in s.cameras if c.enabled]
        return MqttPublisher(s.mqtt, outbox, self.metrics, cameras, s.gateway_id, client_id)

    def _on_swap(self, model: LoadedModel) -> None:
        self.publisher.set_labels(model.labels)

    @property
    def ready(self) -> bool:
        return self.started_at is not None and self.models.current is not None and not self._stopped

    def start(self) -> None:
        """Called by the app's lifespan, before the HTTP server binds its port; idempotent."""
        if self.started_at is not None:
            return
        s = self.settings
        # Without MQTT there is no broker to take the id over, and nothing to write into state_dir.
        secret = client_id_secret(Path(s.state_dir)) if s.mqtt.enabled else None
        client_id = gateway_client_id(s.mqtt, s.gateway_id, secret)
        if self.sync is not None:
            self.sync.bootstrap(client_id)
        self.models.load_initial()
        switches = AnalysisSwitches(Path(s.state_dir) / "analysis.json")
        self.publisher = self._make_publisher(client_id)
        self.publisher.set_labels(self.models.require().labels)
        if self.sync is not None:
            self.sync.attach(self.publisher)
        self.publisher.subscribe(self.publisher.topics.analysis_set_any, self._on_analysis_message)
        with self.cameras.opening(switches, self.publisher):
            self.publisher.start()
            if s.mqtt.enabled:
                self.relay = EventRelay(s.mqtt, client_id)
                self.relay.start()
            self._start_pipelines()
        self.models.start_watching()
        if self.sync is not None:
            self.sync.start()
        self.started_at = time.time()
        logger.info("fer-edge started: %s camera(s), model %s v%s", len(self.cameras.pipelines), s.model.name,
                    self.models.require().version)  # fmt: skip

    def _start_pipelines(self) -> None:
        s = self.settings
        for cam in s.cameras:
            if not cam.enabled:
                continue
            source = self._resolve_source(cam.source)
            pipeline = CameraPipeline(
                cam,
                source,
                detector=s.detector,
                tracking=s.tracking,
                models=self.models,
                publisher=self.publisher,
                metrics=self.metrics,
                reconnect_min_s=cam.reconnect_min_s,
                reconnect_max_s=cam.reconnect_max_s,
            )
            self.cameras.add(pipeline)

    def _resolve_source(self, source: int | str) -> int | str:
        if source != DEMO_SOURCE:
            return source
        return str(ensure_demo_clip(self.settings.state_dir))

    def _on_analysis_message(self, topic: str, payload: bytes) -> None:
        """``<prefix>/<camera>/analysis/set``, on the broker's network thread: parse, then hand over."""
        ours = {c.id for c in self.settings.cameras if c.enabled}
        where = self.publisher.topics.camera_topic(topic)
        if where is None or where[1] != "analysis/set" or where[0] not in ours:
            return  # another gateway's camera on a shared broker
        camera = where[0]
        on = SWITCH_PAYLOADS.get(payload.strip().upper())
        if on is None:
            # Bad input from the broker is refused with a log line, never a traceback.
            logger.warning("ignored %s: the payload is not ON or OFF", topic)
            return

        def apply() -> None:
            try:
                self.cameras.set_analysis(camera, on)
            except CameraError:
                pass
            except Exception:
                logger.exception("camera %s: switching analysis failed", camera)

        try:
            self._switching.submit(apply)
        except RuntimeError:
            logger.info("camera %s: switch command ignored, the service is stopping", camera)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.cameras.close()
        self._switching.shutdown(wait=True, cancel_futures=True)
        # Stop all, then join all: N cameras take one timeout to stop, not N.
        for pipeline in self.cameras.pipelines:
            pipeline.request_stop()
        deadline = time.monotonic() + 5.0
        for pipeline in self.cameras.pipelines:
            try:
                pipeline.join(deadline)
            except Exception:
                logger.exception("camera %s did not stop cleanly", pipeline.cam.id)
        if self.sync is not None:
            self.sync.stop()
        self.models.stop()
        if self.relay is not None:
            self.relay.stop()
        try:
            self.publisher.stop()
        except Exception:
            logger.exception("publisher did not stop cleanly")
        logger.info("fer-edge stopped")
