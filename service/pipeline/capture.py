"""Capture: each camera opens, reads and reconnects on its own thread and keeps only its newest frame.

The capture thread never waits for the analyser. It puts each frame into a one-slot mailbox; a
frame replaced before it was read is counted as dropped when the analyser was busy with an earlier
one and this one was due (inference is behind), and as skipped otherwise (the camera, or a burst
from the network, is faster than the target fps).

Network streams (rtsp://, http(s)://, …) are read with FFmpeg's libraries through PyAV, because no
camera may wait for another: PyAV opens, reads and decodes without the GIL and keeps no lock across
streams, so eight cameras open together in the time of one. OpenCV's FFmpeg backend opens one
stream at a time behind a process-wide lock, and a dead camera held every other camera's
(re)connect for its whole timeout. Files and USB devices stay on OpenCV: a file opens from local
disk in milliseconds and a device through V4L2, so that lock costs them nothing, and OpenCV's
seeking and V4L2 handling are the proven ones.

Live sources get an open and a read timeout, so a camera that stops answering is reported instead of
blocking its thread for ever; RTSP gets the transport its camera config asks for. Decoder threads
are bounded per camera (`decode.threads`), since FFmpeg would otherwise start one per core for
every camera. FFmpeg's own log lines are silenced (see `_silence_ffmpeg`); ours say why an open
failed, with the credentials masked.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import av
import av.logging
import cv2
import numpy as np
from av.codec.hwaccel import HWAccel, hwdevices_available

from service.config.cameras import DecodeConfig, is_stream, redact

logger = logging.getLogger(__name__)

# FFmpeg's device types for the config's names.
_HW_DEVICE_TYPES = {"vaapi": "vaapi", "nvdec": "cuda"}
# FFmpeg's default (up to 5 s; 1.8 s against the test camera) is spent estimating the frame rate,
# which nothing here uses: the SDP already describes an RTSP camera's stream, and the decoder reads
# the rest from the stream's first keyframe. 0.5 s opened the test camera in 0.55 s.
_ANALYZE_US = 500_000

Transport = Literal["tcp", "udp"]


def _silence_ffmpeg() -> None:
    """FFmpeg's log lines go nowhere; the reasons we log come from the errors FFmpeg returns.

    PyAV can route them into Python's logging, but its callback takes the GIL from FFmpeg's own
    threads, which deadlocks decoders and contends under many streams (PyAV issues 751, 909 and
    2276); its lines name no camera; and some of them print the URL, credentials included. Set
    explicitly so that no other import can turn that routing on for this process."""
    av.logging.set_level(None)


_silence_ffmpeg()


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray
    timestamp: float
    seq: int
    # The source's own presentation time, in seconds (None where it gives none): consecutive frames
    # of a camera differ by one frame period, so a larger step is a frame sent but never received.
    stream_time: float | None = None


class LatestFrame:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._arrived = 0.0  # monotonic time the unread frame was put
        self._busy = False
        self._due_at = 0.0
        self.dropped = 0
        self.skipped = 0

    def put(self, frame: Frame) -> str | None:
        """Store the frame; returns 'dropped' or 'skipped' when an unread one was replaced.

        A replaced frame is dropped only if the analyser was busy and the frame was due: one that came
        sooner than the target fps allows would have been passed over anyway, so a burst of two frames
        from the network (common over RTSP) loses nothing the analyser wanted.
        """
        now = time.monotonic()
        with self._cond:
            replaced = None
            if self._frame is not None:
                replaced = "dropped" if self._busy and self._arrived >= self._due_at else "skipped"
                if replaced == "dropped":
                    self.dropped += 1
                else:
                    self.skipped += 1
            self._frame, self._arrived = frame, now
            self._cond.notify()
            return replaced

    def pace(self, due_at: float) -> None:
        """Frames put before ``due_at`` (monotonic) come sooner than the analyser's target fps."""
        with self._cond:
            self._due_at = due_at

    def take(self, timeout: float) -> Frame | None:
        with self._cond:
            if self._frame is None:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def count_skipped(self) -> None:
        """A frame the analyser took but passed over (it came sooner than the target fps allows)."""
        with self._cond:
            self.skipped += 1

    def set_busy(self, busy: bool) -> None:
        with self._cond:
            self._busy = busy


class CaptureStatus:
    """online is None while the first connection is being made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.online: bool | None = None
        self.reason: str | None = "connecting"
        self.last_frame_at: float | None = None

    def set(self, online: bool, reason: str | None) -> None:
        with self._lock:
            self.online, self.reason = online, reason

    def get(self) -> tuple[bool | None, str | None]:
        with self._lock:
            return self.online, self.reason


class SourceError(Exception):
    """A source that cannot be opened; the message says why, fit for a log line (no credentials)."""


class VideoSource(Protocol):
    is_file: bool  # read at its own frame rate, like the camera it stands in for; live ones send at theirs
    fps: float  # a file's own frame rate (0 when unknown)
    hardware: bool  # decoded by a GPU or media engine
    lost: str | None  # why `read` found no more frames

    def read(self) -> tuple[np.ndarray, float | None] | None:
        """The next frame (BGR) and its stream time in seconds, or None once the stream has ended."""
        ...

    def rewind(self) -> bool:
        """Back to the first frame (a looping file); False where the source cannot."""
        ...

    def close(self) -> None: ...


class OpenCvSource:
    """A file or a device index, through OpenCV."""

    hardware = False
    lost: str | None = None

    def __init__(self, source: int | str, threads: int) -> None:
        self.is_file = isinstance(source, str)
        if isinstance(source, str) and not Path(source).is_file():
            raise SourceError("no such file")
        if isinstance(source, int):
            self._cap = cv2.VideoCapture(source)
        else:
            self._cap = cv2.VideoCapture(source, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads])
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError("OpenCV cannot open it")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) if self.is_file else 0.0

    def read(self) -> tuple[np.ndarray, float | None] | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            self.lost = "the file ended" if self.is_file else "the device sent no frame"
            return None
        return image, None

    def rewind(self) -> bool:
        return bool(self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0))

    def close(self) -> None:
        self._cap.release()


@functools.cache
def hardware_decoder(kind: str | None, device: str | None) -> tuple[HWAccel | None, str | None]:
    """The hardware decoder asked for, or (None, why it is unavailable). Probed once per process:
    opening the device is what fails without the hardware, its driver or its permissions."""
    if kind is None:
        return None, None
    device_type = _HW_DEVICE_TYPES[kind]
    types = hwdevices_available()
    if device_type not in types:
        return None, f"this FFmpeg (PyAV {av.__version__}) has no {device_type} devices, only {', '.join(types)}"
    try:
        accel = HWAccel(device_type, device, allow_software_fallback=True)
        accel.create(av.Codec("h264", "r"))
    except (av.FFmpegError, NotImplementedError, ValueError) as exc:
        # FFmpeg says little here ("Operation not permitted" for a machine without CUDA), so say
        # what it usually means.
        where = f"device {device}" if device else "the default device"
        said = getattr(exc, "strerror", None) or exc
        return None, f"{where} did not open ({said}): no such hardware, or its driver or access is missing"
    return accel, None


class StreamSource:
    """A network stream (RTSP, HTTP, …) through PyAV: opens and reads without holding the GIL."""

    is_file = False
    fps = 0.0

    def __init__(self, url: str, *, timeout_s: float, transport: Transport, decode: DecodeConfig) -> None:
        options = {"analyzeduration": str(_ANALYZE_US)}
        if url.lower().startswith(("rtsp://", "rtsps://")):
            # Only this transport: FFmpeg would otherwise fall back to whichever the camera takes.
            options["rtsp_transport"] = transport
        accel, _ = hardware_decoder(decode.hwaccel, decode.hwaccel_device)
        started = time.monotonic()
        try:
            self._container = av.open(url, container_options=options, timeout=(timeout_s, timeout_s), hwaccel=accel)
        except av.FFmpegError as exc:
            raise SourceError(_reason(exc, time.monotonic() - started, timeout_s)) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError("it has no video stream")
        self._stream = self._container.streams.video[0]
        codec = self._stream.codec_context
        # Set before the first packet opens the decoder. PyAV's default is a thread per core.
        codec.thread_count = decode.threads
        if decode.threads > 1:
            codec.thread_type = "AUTO"  # frame threads too: one frame of latency each
        self.hardware = codec.is_hwaccel
        self._threads = decode.threads
        self._timeout_s = timeout_s
        self._packets = self._container.demux(self._stream)
        self._decoded: deque[av.VideoFrame] = deque()
        self.lost: str | None = None  # why the stream ended

    def read(self) -> tuple[np.ndarray, float | None] | None:
        while not self._decoded:
            started = time.monotonic()
            try:
                packet = next(self._packets)
            except StopIteration:
                self.lost = "the stream ended"
                return None
            except av.FFmpegError as exc:
                self.lost = _reason(exc, time.monotonic() - started, self._timeout_s)
                return None
            try:
                self._decoded.extend(packet.decode())
            except av.error.InvalidDataError:
                # A damaged packet (a UDP loss, a camera's glitch): the decoder recovers at the next
                # keyframe, so the stream goes on.
                continue
        frame = self._decoded.popleft()
        # The colour conversion is bounded too: left at its default, swscale starts a thread per core
        # for every frame.
        return frame.to_ndarray(format="bgr24", threads=self._threads), frame.time

    def rewind(self) -> bool:
        return False

    def close(self) -> None:
        self._decoded.clear()
        self._container.close()


def _reason(exc: av.FFmpegError, waited_s: float, timeout_s: float) -> str:
    # str(exc) names the URL, credentials included; strerror is FFmpeg's text for the error code.
    if waited_s >= timeout_s:
        return f"no answer within {timeout_s:g} s"
    return str(exc.strerror or type(exc).__name__)


def open_source(
    source: int | str, *, timeout_s: float = 5.0, transport: Transport = "tcp", decode: DecodeConfig | None = None
) -> VideoSource:
    """Open a camera: raises SourceError, whose message is safe to log."""
    decode = decode or DecodeConfig()
    if isinstance(source, str) and is_stream(source):
        return StreamSource(source, timeout_s=timeout_s, transport=transport, decode=decode)
    return OpenCvSource(source, decode.threads)


def _masked(text: str, source: int | str) -> str:
    return text.replace(str(source), redact(source))


def run_capture(
    source: int | str,
    mailbox: LatestFrame,
    status: CaptureStatus,
    stop: threading.Event,
    *,
    loop: bool = False,
    backoff_min_s: float = 0.5,
    backoff_max_s: float = 30.0,
    fallback_fps: float = 15.0,
    timeout_s: float = 5.0,
    transport: Transport = "tcp",
    decode: DecodeConfig | None = None,
    on_replaced: Callable[[str], None] | None = None,
) -> None:
    """Read frames until ``stop`` is set; every dependency is passed in (Frigate's capture shape)."""
    decode = decode or DecodeConfig()
    name = redact(source)
    if decode.hwaccel is not None:
        _, why = hardware_decoder(decode.hwaccel, decode.hwaccel_device)
        if why is not None:
            logger.warning("camera source %s: hardware decode (%s) is unavailable, %s; decoding in software",
                           name, decode.hwaccel, why)  # fmt: skip
    told_software = decode.hwaccel is None
    delay = backoff_min_s
    seq = 0
    while not stop.is_set():
        src: VideoSource | None = None
        try:
            src = open_source(source, timeout_s=timeout_s, transport=transport, decode=decode)
        except SourceError as exc:
            status.set(False, "open_failed")
            logger.warning("camera source %s cannot be opened (%s); retrying in %.1f s", name, exc, delay)
        except Exception as exc:
            status.set(False, "open_failed")
            logger.error("opening camera source %s failed; retrying in %.1f s\n%s", name, delay,
                         _masked("".join(traceback.format_exception(exc)), source))  # fmt: skip
        if src is not None:
            try:
                if not src.hardware and not told_software:
                    # Once per camera: the device opened (or the line above said why not), but this
                    # stream's codec has no decoder on it.
                    told_software = True
                    if hardware_decoder(decode.hwaccel, decode.hwaccel_device)[0] is not None:
                        logger.warning("camera source %s: its codec has no %s decoder; decoding in software",
                                       name, decode.hwaccel)  # fmt: skip
                got_any = _read_until_lost(src, loop, mailbox, status, stop, fallback_fps, on_replaced, seq)
                seq += got_any
                if got_any:
                    delay = backoff_min_s
                if not stop.is_set():
                    status.set(False, "stream_lost")
                    why = src.lost or "it ended"
                    logger.warning("camera source %s lost (%s); reconnecting in %.1f s", name, why, delay)
            except Exception as exc:
                status.set(False, "stream_lost")
                logger.error("capture of %s failed; reconnecting in %.1f s\n%s", name, delay,
                             _masked("".join(traceback.format_exception(exc)), source))  # fmt: skip
            finally:
                src.close()
        if stop.wait(delay):
            break
        delay = min(delay * 2.0, backoff_max_s)


def _read_until_lost(
    src: VideoSource,
    loop: bool,
    mailbox: LatestFrame,
    status: CaptureStatus,
    stop: threading.Event,
    fallback_fps: float,
    on_replaced: Callable[[str], None] | None,
    seq: int,
) -> int:
    """Returns how many frames were read before the stream ended."""
    period = 1.0 / src.fps if 0 < src.fps <= 240 else 1.0 / fallback_fps
    next_due = time.monotonic()
    count = 0
    while not stop.is_set():
        got = src.read()
        if got is None and loop and count and src.rewind():
            got = src.read()
        if got is None:
            return count
        image, stream_time = got
        now = time.time()
        if status.online is not True:
            status.set(True, None)
        status.last_frame_at = now
        count += 1
        replaced = mailbox.put(Frame(image, now, seq + count, stream_time))
        if replaced and on_replaced is not None:
            on_replaced(replaced)
        if src.is_file:
            next_due += period
            wait = next_due - time.monotonic()
            if wait < -1.0:
                next_due = time.monotonic()
            elif wait > 0 and stop.wait(wait):
                break
    return count
