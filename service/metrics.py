"""Every metric the service exports, on a registry that is passed in. Names follow Prometheus's naming
practices (prometheus.io/docs/practices/naming).

Labels are bounded: camera ids come from the config, stages and results are fixed sets, and no
track, event or request id is ever a label.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from service.event_types import EVENT_TYPES

# The *_created series double the output and no dashboard of ours reads them.
disable_created_metrics()

# The default buckets start at 5 ms, too coarse for a sub-millisecond classifier.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
PIPELINE_STAGES = ("detect", "classify", "track", "rules", "total")
INFER_STAGES = ("read", "decode", "detect", "classify", "total")
# fallback: at start-up the alias named a version that cannot be served, so an earlier one is.
RELOAD_RESULTS = ("swapped", "failed", "fallback")
IGNORE_REASONS = ("mask", "outside_zones")
DOWNLOAD_RESULTS = ("ok", "refused", "failed")


class Metrics:
    def __init__(self, registry: CollectorRegistry, cameras: Iterable[str] = ()) -> None:
        self.registry = registry
        self.stage_seconds = Histogram(
            "fer_stage_seconds", "Time per pipeline stage and frame", ["camera", "stage"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.frame_latency_seconds = Histogram(
            "fer_frame_latency_seconds", "Frame capture to its events handed to the publisher", ["camera"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.infer_seconds = Histogram(
            "fer_infer_seconds", "POST /infer time per stage", ["stage"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.http_requests = Counter(
            "fer_http_requests_total", "HTTP requests by route and status", ["route", "status"], registry=registry
        )
        self.frames_processed = Counter("fer_frames_processed_total", "Frames analysed", ["camera"], registry=registry)
        self.frames_dropped = Counter(
            "fer_frames_dropped_total", "Frames replaced by a newer one before analysis", ["camera"], registry=registry
        )
        self.faces = Counter(
            "fer_faces_total",
            "Faces analysed, summed over frames (after masks and zones)",
            ["camera"],
            registry=registry,
        )
        self.faces_ignored = Counter(
            "fer_faces_ignored_total", "Faces dropped before classification, by reason", ["camera", "reason"],
            registry=registry,
        )  # fmt: skip
        self.events = Counter(
            "fer_events_total", "Events produced by the pipeline", ["camera", "event_type"], registry=registry
        )
        self.events_published = Counter(
            "fer_events_published_total", "Events acknowledged by the broker", ["camera"], registry=registry
        )
        self.events_queued = Gauge("fer_events_queued", "Events waiting in the outbox", registry=registry)
        self.events_dropped = Counter(
            "fer_events_dropped_total", "Oldest events dropped because the outbox was full", registry=registry
        )
        self.mqtt_connected = Gauge("fer_mqtt_connected", "1 while connected to the broker", registry=registry)
        self.camera_up = Gauge("fer_camera_up", "1 while the camera delivers frames", ["camera"], registry=registry)
        self.camera_id_clash = Gauge(
            "fer_camera_id_clash", "1 while another gateway on the broker claims this camera id", ["camera"],
            registry=registry,
        )  # fmt: skip
        self.model_info = Info("fer_model", "The model being served", registry=registry)
        self.model_reloads = Counter(
            "fer_model_reloads_total", "Model reload attempts by result", ["result"], registry=registry
        )
        for result in RELOAD_RESULTS:
            self.model_reloads.labels(result)
        self.model_downloads = Counter(
            "fer_model_downloads_total",
            "Model versions fetched from the central store: ok, refused (failed verification) or failed (network)",
            ["result"], registry=registry,
        )  # fmt: skip
        for result in DOWNLOAD_RESULTS:
            self.model_downloads.labels(result)
        self.model_wanted_version = Gauge(
            "fer_model_wanted_version", "The version the central store announces for this gateway (0: none yet)",
            registry=registry,
        )  # fmt: skip
        for stage in INFER_STAGES:
            self.infer_seconds.labels(stage)
        for camera in cameras:
            self.init_camera(camera)

    def init_camera(self, camera: str) -> None:
        """Create a camera's series up front so dashboards see zeros rather than gaps."""
        for stage in PIPELINE_STAGES:
            self.stage_seconds.labels(camera, stage)
        self.frame_latency_seconds.labels(camera)
        self.frames_processed.labels(camera)
        self.frames_dropped.labels(camera)
        self.faces.labels(camera)
        for reason in IGNORE_REASONS:
            self.faces_ignored.labels(camera, reason)
        self.events_published.labels(camera)
        for event_type in EVENT_TYPES:
            self.events.labels(camera, event_type)
        self.camera_up.labels(camera).set(0)
        self.camera_id_clash.labels(camera).set(0)
