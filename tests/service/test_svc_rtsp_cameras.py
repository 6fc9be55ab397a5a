"""Many RTSP cameras at once, through the capture layer alone (no detector, so that what is timed is
the capture): GStreamer's RTSP server serves H.264 encoded once beforehand, and every camera opens,
reads and reconnects on its own thread. No camera waits for another: not for a slow open, not for a
camera that died and comes back, and not for a URL that never answers. Hardware decode that the
platform lacks falls back to software with one log line.

The time limits are for quiet cores, as CI runs them (docs/capture.md has the figures).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
import pytest

from harness.images import face_crop
from harness.machine import wait_until
from harness.rtsp import RtspServer, encode_h264, require_rtsp_server
from service.config import CameraConfig
from service.config.cameras import DecodeConfig
from service.demo import Segment, write_clip
from service.pipeline.capture import (
    CaptureStatus,
    Frame,
    LatestFrame,
    StreamSource,
    hardware_decoder,
    open_source,
    run_capture,
)

FPS = 15
PERIOD = 1.0 / FPS


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_rtsp_server()
    workdir = tmp_path_factory.mktemp("rtsp-cameras")
    # Longer than any test streams it: a served mount ends with its file.
    clip = write_clip(workdir / "face.avi", face_crop(), [Segment(60.0, size=220)], fps=FPS)
    return encode_h264(clip, workdir / "face.mkv", fps=FPS)


@pytest.fixture
def servers() -> Iterator[list[RtspServer]]:
    started: list[RtspServer] = []
    yield started
    for s in started:
        s.kill()


class Recorder(LatestFrame):
    """The mailbox, keeping each frame's arrival (monotonic) and stream time as well."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, float | None]] = []

    def put(self, frame: Frame) -> str | None:
        self.arrivals.append((time.monotonic(), frame.stream_time))
        return super().put(frame)

    def since(self, t: float) -> list[tuple[float, float | None]]:
        return [a for a in list(self.arrivals) if a[0] >= t]


@dataclass
class Camera:
    url: str
    timeout_s: float = 5.0
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    mailbox: Recorder = field(default_factory=Recorder)
    status: CaptureStatus = field(default_factory=CaptureStatus)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Camera:
        self.thread = threading.Thread(
            target=run_capture,
            args=(self.url, self.mailbox, self.status, self.stop),
            kwargs={"timeout_s": self.timeout_s, "backoff_min_s": 0.25, "backoff_max_s": 1.0, "decode": self.decode},
            daemon=True,
        )
        self.thread.start()
        return self

    def first_frame(self) -> float | None:
        return self.mailbox.arrivals[0][0] if self.mailbox.arrivals else None


@pytest.fixture
def cameras() -> Iterator[list[Camera]]:
    started: list[Camera] = []
    yield started
    for cam in started:
        cam.stop.set()
    for cam in started:
        assert cam.thread is not None
        cam.thread.join(10)


def threads_now() -> int:
    """Every thread of this process, FFmpeg's included."""
    return len(os.listdir("/proc/self/task"))


def missed_frames(arrivals: list[tuple[float, float | None]]) -> int:
    """Frames the camera sent that never arrived, from the steps of the stream's own clock."""
    times = [t for _, t in arrivals if t is not None]
    assert len(times) == len(arrivals), "every RTSP frame carries its stream time"
    return sum(round((b - a) / PERIOD) - 1 for a, b in itertools.pairwise(times))


def longest_wait(arrivals: list[tuple[float, float | None]]) -> float:
    return max((b[0] - a[0] for a, b in itertools.pairwise(arrivals)), default=float("inf"))


def test_eight_cameras_open_together_one_comes_back_and_a_dead_one_holds_up_none(
    tmp_path: Path, h264: Path, servers: list[RtspServer], cameras: list[Camera], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.pipeline.capture")
    servers.append(RtspServer(tmp_path, {f"cam{i}": (h264, "any") for i in range(7)}).start())
    victim_server = RtspServer(tmp_path, {"cam7": (h264, "any")}).start()
    servers.append(victim_server)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never says a word
    dead_url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam"
    try:
        before = threads_now()
        t0 = time.monotonic()
        # The dead camera first, so that its open is in flight while every other camera opens.
        dead = Camera(dead_url, timeout_s=2.0).start()
        cameras.append(dead)
        live = [Camera(s.url(m)).start() for s in servers for m in s.mounts]
        cameras.extend(live)
        victim = live[-1]
        wait_until(lambda: all(c.first_frame() for c in live), 15, what="every live camera's first frame")
        up = [c.first_frame() - t0 for c in live]  # type: ignore[operator]
        print("first frame after " + ", ".join(f"{s:.2f}" for s in up) + " s")
        assert max(up) <= 4.0, f"every live camera is up within 4 s of the start: {up}"
        # One thread per camera, and no decoder threads: decode.threads is 1.
        added = threads_now() - before
        assert added <= len(cameras) + 2, f"{added} threads for {len(cameras)} cameras"

        time.sleep(2.0)
        watch = time.monotonic()
        victim_server.kill()
        killed = time.monotonic()
        wait_until(lambda: victim.status.get() == (False, "stream_lost"), 5, what="the killed camera reported lost")
        lost_after = time.monotonic() - killed
        time.sleep(1.0)
        servers.append(RtspServer(tmp_path, {"cam7": (h264, "any")}, port=victim_server.port).start())
        back = time.monotonic()
        wait_until(lambda: victim.mailbox.since(back), 10, what="the killed camera's frames again")
        back_after = victim.mailbox.since(back)[0][0] - back
        time.sleep(1.5)
        end = time.monotonic()
        print(f"stream_lost {lost_after:.2f} s after the kill; frames {back_after:.2f} s after the restart")
        assert lost_after <= 1.0, "a camera killed over TCP is seen at once"
        # The backoff's ceiling (1 s) plus one open.
        assert back_after <= 2.5

        # Meanwhile every other camera missed no frame and was never held up.
        for i, cam in enumerate(live[:-1]):
            seen = [a for a in cam.mailbox.arrivals if watch <= a[0] <= end]
            assert missed_frames(seen) == 0, f"cam{i} missed frames while cam7 died and came back"
            assert len(seen) >= (end - watch) * FPS - 3, f"cam{i}: {len(seen)} frames in {end - watch:.1f} s"
            assert longest_wait(seen) <= 0.5, f"cam{i} waited {longest_wait(seen):.2f} s for a frame"
        # The dead camera kept trying, each open in flight for its whole timeout, and held up no one.
        assert dead.status.get() == (False, "open_failed") and not dead.mailbox.arrivals
        tries = [r for r in caplog.records if "rtsp://127.0.0.1:" + str(silent.getsockname()[1]) in r.getMessage()]
        assert len(tries) >= 2 and all("no answer within 2 s" in r.getMessage() for r in tries)

        # The privacy switch's stop: a live camera lets go of its stream within a frame or two.
        for cam in live:
            cam.stop.set()
        stopped = time.monotonic()
        for cam in live:
            assert cam.thread is not None
            cam.thread.join(5)
            assert not cam.thread.is_alive()
        assert time.monotonic() - stopped <= 1.0
    finally:
        silent.close()


def test_decoder_threads_are_bounded_per_camera(tmp_path: Path, h264: Path, servers: list[RtspServer]) -> None:
    server = RtspServer(tmp_path, {"cam": (h264, "any")}).start()
    servers.append(server)
    for threads in (1, 3):
        source = open_source(server.url("cam"), decode=DecodeConfig(threads=threads))
        try:
            assert isinstance(source, StreamSource)
            assert source.read() is not None
            codec = source._stream.codec_context
            assert codec.thread_count == threads
        finally:
            source.close()


def test_hardware_decode_it_cannot_have_falls_back_to_software_with_one_log_line(
    tmp_path: Path, h264: Path, servers: list[RtspServer], cameras: list[Camera], caplog: pytest.LogCaptureFixture
) -> None:
    server = RtspServer(tmp_path, {"cam": (h264, "any")}).start()
    servers.append(server)
    # No VAAPI in PyAV's wheel; no NVIDIA GPU on the test machines. A machine with one decodes on it.
    for kind in ("vaapi", "nvdec"):
        caplog.clear()
        cam = Camera(server.url("cam"), decode=DecodeConfig(hwaccel=kind)).start()
        cameras.append(cam)
        wait_until(lambda cam=cam: len(cam.mailbox.arrivals) > FPS, 15, what=f"frames with hwaccel {kind}")
        _, why = hardware_decoder(kind, None)
        lines = [r.getMessage() for r in caplog.records if "decoding in software" in r.getMessage()]
        if why is None:
            assert not lines, "the device opened, so the camera decodes on it"
            continue
        assert len(lines) == 1, lines
        assert f"hardware decode ({kind}) is unavailable" in lines[0] and why in lines[0]
        assert "rtsp://127.0.0.1" in lines[0]
        cam.stop.set()


def test_hardware_decode_is_for_network_streams() -> None:
    CameraConfig.model_validate({"id": "a", "source": "rtsp://cam/x", "decode": {"hwaccel": "vaapi"}})
    for source in ("clip.avi", 0, "demo"):
        with pytest.raises(pydantic.ValidationError, match="hardware decode is for network streams"):
            CameraConfig.model_validate({"id": "a", "source": source, "decode": {"hwaccel": "nvdec"}})
    with pytest.raises(pydantic.ValidationError, match="NVDEC takes a GPU index"):
        DecodeConfig(hwaccel="nvdec", hwaccel_device="/dev/dri/renderD128")
    assert DecodeConfig(hwaccel="nvdec", hwaccel_device="1").hwaccel_device == "1"
