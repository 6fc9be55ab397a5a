"""Camera streams: sustained fps per camera and p95 frame-to-event latency for 1 and 4 cameras of
640×480, with the time per stage.

Each camera plays a 640×480 clip of a real face (in view 85% of the time, drifting) at 15 fps through
the real pipeline: OpenCV capture, the Haar detector, onnxruntime, tracker, rules, and an MQTT
publisher whose events land in the real SQLite outbox (no broker, so no network in the figures).
Frame-to-event latency is capture time to the frame's events being in the outbox.

    .venv/bin/python bench/bench_streams.py --cameras 1 4 --duration 20
    .venv/bin/python bench/bench_streams.py --cameras 4 --interval 2     # detector on every 2nd frame
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import cv2
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, percentile
from service.comms.mqtt import MqttPublisher
from service.comms.outbox import Outbox
from service.comms.payloads import Event
from service.config import CameraConfig, DetectorConfig, ModelConfig, MqttConfig, TrackingConfig
from service.demo import Segment, shipped_face, write_clip
from service.metrics import PIPELINE_STAGES, Metrics
from service.models import ModelManager
from service.pipeline.capture import Frame
from service.pipeline.runner import CameraPipeline


class TimedPipeline(CameraPipeline):
    """Records capture-to-outbox latency for every analysed frame."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.recording = False
        self.latencies: list[float] = []
        self.event_latencies: list[float] = []

    def process(self, frame: Frame) -> list[Event]:
        events = super().process(frame)
        if self.recording:
            latency = time.time() - frame.timestamp
            self.latencies.append(latency)
            if events:
                self.event_latencies.append(latency)
        return events


def run(n: int, clip: Path, args: argparse.Namespace, workdir: Path) -> None:
    registry = CollectorRegistry()
    ids = [f"cam{i}" for i in range(n)]
    metrics = Metrics(registry, ids)
    models = ModelManager(
        ModelConfig(store=ROOT / "model_store" / "seed", watch_interval_s=0, variant=args.variant), metrics
    )
    model = models.load_initial()
    outbox = Outbox(workdir / f"outbox-{n}.sqlite3", 100_000, metrics)
    publisher = MqttPublisher(MqttConfig(port=1), outbox, metrics, [(i, i) for i in ids])  # never started
    detector = DetectorConfig(scale_factor=args.scale_factor)
    # A short dwell so that expression events (the events measured) are frequent.
    tracking = TrackingConfig(min_dwell_s=0.2, smoothing_tau_s=0.2)
    pipelines = []
    for cam_id in ids:
        cam = CameraConfig.model_validate(
            {"id": cam_id, "source": str(clip), "loop": True, "fps": args.fps,
             "detect": {"width": 320, "height": 240, "interval": args.interval}}
        )  # fmt: skip
        p = TimedPipeline(cam, str(clip), detector=detector, tracking=tracking, models=models,
                          publisher=publisher, metrics=metrics)  # fmt: skip
        pipelines.append(p)
    for p in pipelines:
        p.start()
    time.sleep(args.warmup)
    start_frames = [p.frames for p in pipelines]
    start_dropped = [p.mailbox.dropped for p in pipelines]
    sums0 = {s: sum(registry.get_sample_value("fer_stage_seconds_sum", {"camera": c, "stage": s}) for c in ids)
             for s in PIPELINE_STAGES}  # fmt: skip
    counts0 = {s: sum(registry.get_sample_value("fer_stage_seconds_count", {"camera": c, "stage": s}) for c in ids)
               for s in PIPELINE_STAGES}  # fmt: skip
    for p in pipelines:
        p.recording = True
    t0 = time.monotonic()
    time.sleep(args.duration)
    elapsed = time.monotonic() - t0
    for p in pipelines:
        p.recording = False
    fps = [(p.frames - f0) / elapsed for p, f0 in zip(pipelines, start_frames, strict=True)]
    dropped = [(p.mailbox.dropped - d0) / elapsed for p, d0 in zip(pipelines, start_dropped, strict=True)]
    stage_ms = {}
    for s in PIPELINE_STAGES:
        total = sum(registry.get_sample_value("fer_stage_seconds_sum", {"camera": c, "stage": s}) for c in ids)
        count = sum(registry.get_sample_value("fer_stage_seconds_count", {"camera": c, "stage": s}) for c in ids)
        if count > counts0[s]:
            stage_ms[s] = (total - sums0[s]) / (count - counts0[s]) * 1000
    for p in pipelines:
        p.stop(timeout=5)
    lat = [x * 1000 for p in pipelines for x in p.latencies]
    ev_lat = [x * 1000 for p in pipelines for x in p.event_latencies]
    print(
        f"{n} camera(s), model v{model.version}, clip {args.fps:g} fps 640x480, detect 320x240 every "
        f"{args.interval} frame(s), {elapsed:.0f} s:"
    )
    print(f"  fps per camera: {', '.join(f'{x:.1f}' for x in fps)} (target {args.fps:g}); "
          f"dropped/s per camera: {', '.join(f'{x:.1f}' for x in dropped)}")  # fmt: skip
    print(f"  frame-to-event latency ms: p50 {percentile(lat, 50):.1f}, p95 {percentile(lat, 95):.1f} "
          f"(all {len(lat)} frames); p95 {percentile(ev_lat, 95):.1f} over the {len(ev_lat)} frames that "
          f"emitted events")  # fmt: skip
    detail = ", ".join(f"{s} {v:.2f}" for s, v in stage_ms.items())
    print(f"  mean ms per analysed frame: {detail} (detect is per detector run)")
    publisher.outbox.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--interval", type=int, default=1, help="detector on every Nth frame")
    ap.add_argument("--scale-factor", type=float, default=DetectorConfig().scale_factor)
    ap.add_argument("--variant", default=None, help="model variant, e.g. int8")
    ap.add_argument("--cv-threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    args = ap.parse_args()
    if args.cv_threads is not None:
        cv2.setNumThreads(args.cv_threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        # The face comes and goes, so every appearance is a new track with an expression event.
        script = [
            Segment(2.0, x=0.3, x_end=0.6),
            Segment(0.7, face=False),
            Segment(2.0, x=0.7, x_end=0.4, flip=True),
            Segment(0.7, face=False),
        ]
        clip = write_clip(Path(tmp) / "bench.avi", shipped_face(), script, fps=args.fps)
        for n in args.cameras:
            run(n, clip, args, Path(tmp))


if __name__ == "__main__":
    main()
