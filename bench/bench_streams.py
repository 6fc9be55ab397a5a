"""Camera streams: sustained fps per camera and p95 frame-to-event latency for N cameras of
640×480, with the time per stage, decoding included, and whether the gateway holds them.

Each camera plays a 640×480 clip of a real face (in view 85% of the time, drifting) at 15 fps through
the real pipeline: the capture layer, the configured detector (the service's default: YuNet under
onnxruntime at 640×480 on every 3rd frame), onnxruntime, tracker, rules, and an MQTT publisher whose
events land in the real SQLite outbox (no broker, so no network in the figures). Frame-to-event
latency is capture time to the frame's events being in the outbox. A run "holds" when every camera
keeps 95% of the target fps, drops no frame and has a p95 frame-to-event latency of at most 100 ms.
The CPU this process used per camera is printed too: unlike the latencies, it barely changes when
other processes share the cores.

With ``--source rtsp`` the cameras are what gateways really read: GStreamer's RTSP server (Debian's
packages, see harness/rtsp.py) serves one mount per camera, H.264 640×480 at 15 fps, and the service
reads them over RTSP/TCP (FFmpeg through PyAV). The clip is encoded to H.264 once, before anything
is timed, and the server only demuxes and packetises it, so what is measured is the gateway, not an
encoder; the server's CPU use is printed all the same. Every run first waits until each camera
delivers frames and prints how long that took from the start: the cameras open in parallel, and
``--dead N`` adds N cameras that accept the connection and never answer, whose opens must hold up
none of the others. Before the pipelines run, the same sources are read alone for a few seconds to
measure the decode CPU time per frame (H.264 for RTSP, MJPEG for the file), which the pipeline's
stages do not include.

    .venv/bin/python bench/bench_streams.py --source rtsp --cameras 1 4 12 --dead 1 --duration 20
    .venv/bin/python bench/bench_streams.py --cameras 1 4 --duration 20              # MJPEG files
    .venv/bin/python bench/bench_streams.py --cameras 1 4 12 --duration 20           # the defaults
    .venv/bin/python bench/bench_streams.py --cameras 12 --interval 1 --width 320 --height 240
    .venv/bin/python bench/bench_streams.py --cameras 4 --detector haar --width 320 --height 240 --interval 1
"""

from __future__ import annotations

import argparse
import logging
import resource
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
from prometheus_client import CollectorRegistry

from bench._common import ROOT, percentile
from harness.rtsp import RtspServer, encode_h264, rtsp_server_missing  # the same RTSP camera as the tests
from service.comms.mqtt import MqttPublisher
from service.comms.outbox import Outbox
from service.comms.payloads import Event
from service.config import CameraConfig, DetectorConfig, ModelConfig, MqttConfig, TrackingConfig
from service.config import DetectSize as CameraDetect
from service.demo import Segment, shipped_face, write_clip
from service.metrics import PIPELINE_STAGES, Metrics
from service.models import ModelManager
from service.pipeline.capture import Frame, open_source
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


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _positive(counts: list[int], i: int) -> bool:
    return counts[i] > 0


def _delivering(pipeline: TimedPipeline) -> bool:
    return pipeline.capture_status.last_frame_at is not None


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def wait_all_up(ready: list[Callable[[], bool]], what: str, limit_s: float = 60.0) -> float:
    """Seconds from now until every ``ready()`` is true; exits when one is not within ``limit_s``."""
    t0 = time.monotonic()
    while not all(r() for r in ready):
        if time.monotonic() - t0 > limit_s:
            sys.exit(f"{sum(not r() for r in ready)} of {len(ready)} {what} not up after {limit_s:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def decode_cost(sources: list[str], seconds: float) -> tuple[float, float]:
    """Read every source at once, doing nothing else: (CPU ms per decoded frame, frames/s per source)."""
    counts = [0] * len(sources)
    stop = threading.Event()

    def read(i: int) -> None:
        src = open_source(sources[i])
        while not stop.is_set():
            got = src.read()
            if got is None and src.is_file and src.rewind():  # a file is read in a loop, as fast as it decodes
                got = src.read()
            if got is None:
                break
            counts[i] += 1
        src.close()

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(sources))]
    for t in threads:
        t.start()
    up_s = wait_all_up([partial(_positive, counts, i) for i in range(len(sources))], "sources")
    print(f"  decode only: every source delivered frames {up_s:.2f} s after the start")
    time.sleep(1.0)  # past the first frames' burst
    frames0, cpu0, t0 = sum(counts), cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    frames, cpu, elapsed = sum(counts) - frames0, cpu_seconds() - cpu0, time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(10)
    return (cpu / frames * 1000 if frames else float("nan")), frames / elapsed / len(sources)


def run(n: int, clip: Path, args: argparse.Namespace, workdir: Path) -> None:
    server = None
    if args.source == "rtsp":
        server = RtspServer(workdir, {f"cam{i}": (clip, "any") for i in range(n)}).start()
        sources = [server.url(f"cam{i}") for i in range(n)]
    else:
        sources = [str(clip)] * n
    # A camera that accepts the connection and never answers: each of its opens takes the whole timeout.
    silent = socket.create_server(("127.0.0.1", 0))
    dead = [f"rtsp://127.0.0.1:{silent.getsockname()[1]}/dead{i}" for i in range(args.dead)]
    try:
        run_sources(n, sources, dead, server, args, workdir)
    finally:
        silent.close()
        if server is not None:
            server.kill()


def run_sources(n: int, sources: list[str], dead: list[str], server: RtspServer | None, args: argparse.Namespace,
                workdir: Path) -> None:  # fmt: skip
    # A file is read as fast as it decodes; an RTSP camera sends at its own 15 fps.
    decode_ms, decode_fps = decode_cost(sources, args.decode_seconds)
    registry = CollectorRegistry()
    ids = [f"cam{i}" for i in range(n)]
    dead_ids = [f"dead{i}" for i in range(len(dead))]
    metrics = Metrics(registry, ids + dead_ids)
    models = ModelManager(
        ModelConfig(store=ROOT / "model_store" / "seed", watch_interval_s=0, variant=args.variant), metrics
    )
    model = models.load_initial()
    outbox = Outbox(workdir / f"outbox-{n}.sqlite3", 100_000, metrics)
    publisher = MqttPublisher(MqttConfig(port=1), outbox, metrics, [(i, i) for i in ids + dead_ids])  # never started
    detector = DetectorConfig(kind=args.detector, scale_factor=args.scale_factor)
    # A short dwell so that expression events (the events measured) are frequent.
    tracking = TrackingConfig(min_dwell_s=0.2, smoothing_tau_s=0.2)
    pipelines: list[TimedPipeline] = []
    dead_pipelines: list[TimedPipeline] = []
    for cam_id, source in zip(ids + dead_ids, sources + dead, strict=True):
        cam = CameraConfig.model_validate(
            {"id": cam_id, "source": source, "loop": True, "fps": args.fps,
             "detect": {"width": args.width, "height": args.height, "interval": args.interval}}
        )  # fmt: skip
        p = TimedPipeline(cam, source, detector=detector, tracking=tracking, models=models,
                          publisher=publisher, metrics=metrics)  # fmt: skip
        (pipelines if cam_id in ids else dead_pipelines).append(p)
    # The dead cameras first, so that their opens are in flight while the live ones open.
    for p in dead_pipelines + pipelines:
        p.start()
    up_s = wait_all_up([partial(_delivering, p) for p in pipelines], "cameras")
    also = f", beside {len(dead)} dead one(s)" if dead else ""
    print(f"  all {n} camera(s) delivering frames {up_s:.2f} s after the pipelines started{also}")
    time.sleep(args.warmup)
    start_frames = [p.frames for p in pipelines]
    start_dropped = [p.mailbox.dropped for p in pipelines]
    sums0 = {s: sum(_sample(registry, "fer_stage_seconds_sum", {"camera": c, "stage": s}) for c in ids)
             for s in PIPELINE_STAGES}  # fmt: skip
    counts0 = {s: sum(_sample(registry, "fer_stage_seconds_count", {"camera": c, "stage": s}) for c in ids)
               for s in PIPELINE_STAGES}  # fmt: skip
    for p in pipelines:
        p.recording = True
    server_cpu0 = server.cpu_seconds() if server else 0.0
    cpu0, t0 = cpu_seconds(), time.monotonic()
    time.sleep(args.duration)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    server_share = (server.cpu_seconds() - server_cpu0) / elapsed if server else 0.0
    for p in pipelines:
        p.recording = False
    fps = [(p.frames - f0) / elapsed for p, f0 in zip(pipelines, start_frames, strict=True)]
    dropped = [(p.mailbox.dropped - d0) / elapsed for p, d0 in zip(pipelines, start_dropped, strict=True)]
    stage_ms = {}
    for s in PIPELINE_STAGES:
        total = sum(_sample(registry, "fer_stage_seconds_sum", {"camera": c, "stage": s}) for c in ids)
        count = sum(_sample(registry, "fer_stage_seconds_count", {"camera": c, "stage": s}) for c in ids)
        if count > counts0[s]:
            stage_ms[s] = (total - sums0[s]) / (count - counts0[s]) * 1000
    for p in pipelines + dead_pipelines:
        p.request_stop()
    for p in pipelines + dead_pipelines:
        p.stop(timeout=10)
    lat = [x * 1000 for p in pipelines for x in p.latencies]
    ev_lat = [x * 1000 for p in pipelines for x in p.event_latencies]
    source = "RTSP H.264 (GStreamer server, TCP)" if server else "MJPEG file"
    print(
        f"{n} camera(s) from {source}, model v{model.version}, {args.fps:g} fps 640x480, "
        f"{detector.resolved_kind} at {args.width}x{args.height} every {args.interval} frame(s), {elapsed:.0f} s:"
    )
    print(f"  fps per camera: {', '.join(f'{x:.1f}' for x in fps)} (target {args.fps:g}); "
          f"dropped/s per camera: {', '.join(f'{x:.1f}' for x in dropped)}")  # fmt: skip
    print(f"  frame-to-event latency ms: p50 {percentile(lat, 50):.1f}, p95 {percentile(lat, 95):.1f} "
          f"(all {len(lat)} frames); p95 {percentile(ev_lat, 95):.1f} over the {len(ev_lat)} frames that "
          f"emitted events")  # fmt: skip
    detail = ", ".join(f"{s} {v:.2f}" for s, v in stage_ms.items())
    print(f"  mean ms per analysed frame: decode {decode_ms:.2f} (CPU, read alone at {decode_fps:.1f} fps per "
          f"source), {detail} (detect is per detector run, classify per frame with faces)")  # fmt: skip
    # CPU time, unlike the wall times above, does not grow when other processes share the cores.
    analysed = sum(fps) * elapsed
    print(f"  service CPU: {cpu / elapsed:.2f} cores, {cpu / max(1, analysed) * 1000:.1f} ms per analysed frame "
          f"(capture and decode included)")  # fmt: skip
    if server:
        print(f"  the RTSP server (pre-encoded H.264, no encoder) used {server_share * 100:.0f}% of one core meanwhile")
    # This process's CPU (capture and decode, detection, classification, publishing) per camera;
    # 2 cores' worth of it bounds how many cameras could fit on an otherwise idle gateway.
    per_cam = cpu / elapsed / n
    print(f"  CPU: {per_cam * 100:.1f}% of one core per camera (2 cores / that = {2 / per_cam:.0f} cameras)")
    holds = min(fps) >= 0.95 * args.fps and max(dropped) == 0 and percentile(lat, 95) <= 100
    print(f"  holds {n} camera(s): {'yes' if holds else 'no'}", flush=True)
    publisher.outbox.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=("file", "rtsp"), default="file", help="MJPEG files or RTSP H.264")
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--dead", type=int, default=0, help="RTSP cameras that never answer, beside the live ones")
    ap.add_argument("--decode-seconds", type=float, default=5.0, help="the decode-only phase")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--interval", type=int, default=CameraDetect().interval, help="detector on every Nth frame")
    ap.add_argument("--detector", default=None, choices=["yunet", "haar"], help="default: the service's")
    ap.add_argument("--width", type=int, default=CameraDetect().width, help="detection width")
    ap.add_argument("--height", type=int, default=CameraDetect().height, help="detection height")
    ap.add_argument("--scale-factor", type=float, default=DetectorConfig().scale_factor, help="Haar only")
    ap.add_argument("--variant", default=None, help="model variant, e.g. int8")
    ap.add_argument("--cv-threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    args = ap.parse_args()
    if args.cv_threads is not None:
        cv2.setNumThreads(args.cv_threads)
    logging.basicConfig(level=logging.WARNING)
    if args.source == "rtsp" and (why := rtsp_server_missing()):
        sys.exit(f"--source rtsp: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        # The face comes and goes, so every appearance is a new track with an expression event.
        script = [
            Segment(2.0, x=0.3, x_end=0.6),
            Segment(0.7, face=False),
            Segment(2.0, x=0.7, x_end=0.4, flip=True),
            Segment(0.7, face=False),
        ]
        if args.source == "rtsp":
            # A shared RTSP media drops its clients when the clip ends: make it outlast the run.
            needed = args.decode_seconds + 3 + args.warmup + args.duration + 15
            script *= int(needed // sum(seg.seconds for seg in script)) + 1
        clip = write_clip(Path(tmp) / "bench.avi", shipped_face(), script, fps=args.fps)
        if args.source == "rtsp":
            # Encoded once, here, so that no encoder shares the cores while the gateway is measured.
            clip = encode_h264(clip, Path(tmp) / "bench.mkv", fps=round(args.fps))
        for n in args.cameras:
            run(n, clip, args, Path(tmp))


if __name__ == "__main__":
    main()
