"""One camera's pipeline. The only stage that touches metrics and the publisher.

Data flows one way: capture thread -> mailbox -> this worker (detect, masks and zones, classify,
track, rules) -> publisher. Frames live in memory only while they are analysed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from service.comms.base import Publisher
from service.comms.payloads import CameraStatus, Event, ExpressionState
from service.config import CameraConfig, DetectorConfig, TrackingConfig
from service.metrics import Metrics
from service.models import LoadedModel, ModelManager
from service.pipeline.capture import CaptureStatus, Frame, LatestFrame, run_capture
from service.pipeline.classify import classify
from service.pipeline.detect import Box, detect_scaled, make_detector
from service.pipeline.rules import RuleEngine
from service.pipeline.track import IouTracker
from service.pipeline.zones import ZoneFilter

logger = logging.getLogger(__name__)


class CameraPipeline:
    def __init__(
        self,
        cam: CameraConfig,
        source: int | str,
        *,
        detector: DetectorConfig,
        tracking: TrackingConfig,
        models: ModelManager,
        publisher: Publisher,
        metrics: Metrics,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.cam = cam
        self.source = source
        self.models = models
        self.publisher = publisher
        self.metrics = metrics
        self.detector = make_detector(detector)
        self.tracker = IouTracker(tracking.iou_threshold, tracking.max_age_s, tracking.smoothing_tau_s)
        model = models.require()
        self.zone_filter = ZoneFilter(cam.masks, cam.zones)
        zone_rules = {name: z.rules for name, z in cam.zones.items() if z.rules is not None}
        self.engine = RuleEngine(cam.id, cam.rules, tracking, model.labels, zone_rules)
        self._model_version = model.version
        self.engine.model_version = model.version
        unknown = self.engine.unknown_labels()
        if unknown:
            logger.warning("camera %s: rule labels %s are not model labels and are ignored", cam.id, unknown)
        self.mailbox = LatestFrame()
        self.capture_status = CaptureStatus()
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._published_status: tuple[bool, str | None] | None = None
        self._stalled = False
        self.frames = 0
        self._last_boxes: list[Box] | None = None
        self.faces_now = 0
        self.current_label: str | None = None
        self._said: ExpressionState | None = None  # the retained expression last published
        self._fps_window: deque[float] = deque(maxlen=30)
        metrics.init_camera(cam.id)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def analysing(self) -> bool:
        return bool(self._threads)

    def start(self) -> None:
        """Open the stream and analyse it; also how a paused camera resumes."""
        if self._threads:
            return
        self._stop = threading.Event()
        self.capture_status = CaptureStatus()
        self._published_status = None
        self.mailbox.take(timeout=0)
        capture = threading.Thread(
            target=run_capture,
            name=f"capture-{self.cam.id}",
            args=(self.source, self.mailbox, self.capture_status, self._stop),
            kwargs={
                "loop": self.cam.loop,
                "backoff_min_s": self._reconnect[0],
                "backoff_max_s": self._reconnect[1],
                "fallback_fps": self.cam.fps,
                "timeout_s": self.cam.timeout_s,
                "transport": self.cam.transport,
                "decode": self.cam.decode,
                "on_replaced": self._on_replaced,
            },
            daemon=True,
        )
        # Each thread gets its own stop event, so one that outlives a pause never sees the next start's.
        worker = threading.Thread(target=self._work, name=f"pipeline-{self.cam.id}", args=(self._stop,), daemon=True)
        self._threads = [capture, worker]
        for t in self._threads:
            t.start()

    def request_stop(self) -> None:
        """Tell the threads to stop without waiting: the runtime stops every camera, then joins them."""
        self._stop.set()

    def _join_threads(self, deadline: float) -> bool:
        """Wait for the threads until ``deadline`` (monotonic); the capture thread releases the stream
        as it ends. True when the worker has ended: the rule engine belongs to it, so only then may
        it be closed from here."""
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        worker = self._threads[-1] if self._threads else None
        if not any(t.is_alive() for t in self._threads):
            self._threads = []  # a thread still running is kept, so the camera still counts as analysing
        return worker is None or not worker.is_alive()

    def pause(self, timeout: float = 5.0) -> None:
        """The privacy switch is OFF: release the stream, end whatever is open, say so.

        Also called for a camera that starts switched off, to announce it."""
        self.request_stop()
        ended = self._join_threads(time.monotonic() + timeout)
        now = time.time()
        if ended:
            self._emit(self.engine.close(now))
            self.tracker.end_all()
            self._last_boxes = None
            self.faces_now = 0
            self._fps_window.clear()
            self._say_no_face(now)
        else:
            logger.error("camera %s: worker still running after switching off; its open events are not ended",
                         self.cam.id)  # fmt: skip
        self.publisher.set_camera_status(
            CameraStatus(camera=self.cam.id, state="offline", reason="analysis_off", timestamp=now)
        )
        self.metrics.camera_up.labels(self.cam.id).set(0)

    def join(self, deadline: float) -> None:
        """Wait for the threads until ``deadline`` (monotonic), then close the camera's open events and
        say that no face is seen: the retained expression outlives us, and must not go on saying
        "happy, 1 face" beside an `offline` status. Home Assistant takes MQTT as the truth, and its
        users report a sensor left at its last value by a stopped Frigate as a bug (frigate#679)."""
        ended = self._join_threads(deadline)
        now = time.time()
        if ended:
            self._emit(self.engine.close(now))
            self.tracker.end_all()
            self.faces_now = 0
            self._say_no_face(now)
        else:
            logger.error("camera %s: worker still running after stop; its open events are not ended", self.cam.id)
        self.publisher.set_camera_status(
            CameraStatus(camera=self.cam.id, state="offline", reason="stopped", timestamp=now)
        )
        self.metrics.camera_up.labels(self.cam.id).set(0)

    def stop(self, timeout: float = 5.0) -> None:
        self.request_stop()
        self.join(time.monotonic() + timeout)

    def _on_replaced(self, kind: str) -> None:
        if kind == "dropped":
            self.metrics.frames_dropped.labels(self.cam.id).inc()

    # -- work ------------------------------------------------------------------------------------

    def _work(self, stop: threading.Event) -> None:
        period = 1.0 / self.cam.fps
        # Rate-limit by skipping frames that come too early rather than by sleeping: a frame is
        # analysed the moment it arrives, so pacing adds no latency. A quarter period of slack
        # absorbs the jitter of a source that delivers at exactly the target rate.
        slack = 0.25 * period
        next_due = time.monotonic()
        while not stop.is_set():
            try:
                frame = self.mailbox.take(timeout=0.2)
                now = time.time()
                self._check_status(now)
                if frame is None:
                    self._idle(now)
                    continue
                mono = time.monotonic()
                if mono < next_due - slack:
                    self.mailbox.count_skipped()
                    continue
                next_due = max(next_due, mono - slack) + period
                self.mailbox.pace(next_due - slack)
                self.mailbox.set_busy(True)
                try:
                    self.process(frame)
                finally:
                    self.mailbox.set_busy(False)
            except Exception:
                logger.exception("camera %s: frame failed; continuing", self.cam.id)
                self.mailbox.set_busy(False)
                stop.wait(0.1)

    def _sync_model(self) -> LoadedModel:
        model = self.models.require()
        if model.version != self._model_version:
            if model.labels != self.engine.labels:
                # Smoothed scores are in the old label order; the tracks restart with the new model.
                self._emit(self.engine.on_frame([], self.tracker.end_all(), time.time()))
                self.engine.set_labels(model.labels)
            self.engine.model_version = model.version
            self._model_version = model.version
        return model

    def process(self, frame: Frame) -> list[Event]:
        """Analyse one frame and publish what it changed; returns the events (for benchmarks)."""
        cam = self.cam.id
        model = self._sync_model()
        t0 = time.perf_counter()
        det = self.cam.detect
        if self.frames % det.interval == 0 or self._last_boxes is None:
            # Faces move little between frames: reusing the last boxes on the frames between is
            # the cheapest way to cut the detector, which dominates the cost of a frame.
            found = detect_scaled(self.detector, frame.image, det.width, det.height)
            # Masked faces and faces outside every zone go no further: no classification, no track.
            placed = self.zone_filter.place(found, frame.image.shape[1], frame.image.shape[0])
            if placed.masked:
                self.metrics.faces_ignored.labels(cam, "mask").inc(placed.masked)
            if placed.outside_zones:
                self.metrics.faces_ignored.labels(cam, "outside_zones").inc(placed.outside_zones)
            boxes = placed.boxes
            self._last_boxes = boxes
            self.metrics.stage_seconds.labels(cam, "detect").observe(time.perf_counter() - t0)
        else:
            boxes = self._last_boxes
        t1 = time.perf_counter()
        probs = classify(frame.image, boxes, model) if boxes else np.zeros((0, len(model.labels)), np.float32)
        t2 = time.perf_counter()
        seen, ended = self.tracker.update(boxes, probs, frame.timestamp)
        zones = None
        if self.zone_filter.zones:
            h, w = frame.image.shape[:2]
            zones = {t.id: self.zone_filter.zones_of(t.box, w, h) for t in seen}
        t3 = time.perf_counter()
        events = self.engine.on_frame(seen, ended, frame.timestamp, zones)
        state = self.engine.expression_state(seen, frame.timestamp)
        t4 = time.perf_counter()
        self._emit(events)
        self._publish_expression(state)
        stage = self.metrics.stage_seconds
        if boxes:
            # Per frame that had faces to classify, as detect is per detector run.
            stage.labels(cam, "classify").observe(t2 - t1)
        stage.labels(cam, "track").observe(t3 - t2)
        stage.labels(cam, "rules").observe(t4 - t3)
        stage.labels(cam, "total").observe(time.perf_counter() - t0)
        self.metrics.frame_latency_seconds.labels(cam).observe(max(0.0, time.time() - frame.timestamp))
        self.metrics.frames_processed.labels(cam).inc()
        if boxes:
            self.metrics.faces.labels(cam).inc(len(boxes))
        self.frames += 1
        self.faces_now = len(seen)
        self._fps_window.append(frame.timestamp)
        return events

    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            self.metrics.events.labels(self.cam.id, ev.event_type).inc()
            self.publisher.publish_event(ev)

    def _idle(self, now: float) -> None:
        self._last_boxes = None
        if self.tracker.tracks:
            seen, ended = self.tracker.update([], np.zeros((0, len(self.engine.labels))), now)
            if ended:
                self._emit(self.engine.on_frame(seen, ended, now))
                self._publish_expression(self.engine.expression_state(seen, now))

    def _publish_expression(self, state: ExpressionState | None) -> None:
        if state is not None:
            self.publisher.set_expression(state)
            self.current_label = state.label
            self._said = state

    def _say_no_face(self, now: float) -> None:
        """After ``engine.close``: no face any more, said once (a camera already saying so repeats nothing)."""
        state = self.engine.expression_state([], now)
        if self._said is None or self._said.label is not None or self._said.faces:
            self._publish_expression(state)

    def _check_status(self, now: float) -> None:
        online, reason = self.capture_status.get()
        last = self.capture_status.last_frame_at
        limit = self.cam.rules.camera_fault.no_frames_s
        if online and last is not None and now - last > limit:
            online, reason = False, "no_frames"
        if online is None:
            return
        current = (online, reason)
        if current == self._published_status:
            return
        self._published_status = current
        self.metrics.camera_up.labels(self.cam.id).set(1 if online else 0)
        self.publisher.set_camera_status(
            CameraStatus(camera=self.cam.id, state="online" if online else "offline", reason=reason, timestamp=now)
        )
        self._emit(self.engine.camera_status(online, reason, now))
        log = logger.info if online else logger.warning
        log("camera %s is %s%s", self.cam.id, "online" if online else "offline", f" ({reason})" if reason else "")

    def snapshot(self) -> dict[str, Any]:
        online, reason = self.capture_status.get()
        if not self.analysing:
            online, reason = False, "analysis_off"
        last = self.capture_status.last_frame_at
        window = self._fps_window
        fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 and window[-1] > window[0] else 0.0
        return {
            "id": self.cam.id,
            "name": self.cam.name or self.cam.id,
            "enabled": True,
            "status": "online" if online else ("connecting" if online is None else "offline"),
            "analysis": "ON" if self.analysing else "OFF",
            "reason": reason,
            "target_fps": self.cam.fps,
            "fps": round(fps, 2),
            "frames_processed": self.frames,
            "frames_dropped": self.mailbox.dropped,
            "frames_skipped": self.mailbox.skipped,
            "last_frame_age_s": round(time.time() - last, 3) if last else None,
            "faces": self.faces_now,
            "expression": self.current_label,
            "model_version": self._model_version,
        }
