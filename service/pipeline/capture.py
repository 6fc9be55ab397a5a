"""Capture (OpenCV): keep only the newest frame, reconnect with backoff, report online/offline.

The capture thread never waits for the analyser. It puts each frame into a one-slot mailbox; a
frame replaced before it was read is counted as dropped when the analyser was busy (inference is
behind) and as skipped when it was idle on purpose (the camera is faster than the target fps).

Live sources get an open and a read timeout, so a camera that stops answering is reported instead of
blocking its thread for ever, and RTSP gets the transport its camera config asks for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from service.config.cameras import redact

logger = logging.getLogger(__name__)

_URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

Transport = Literal["tcp", "udp"]


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray
    timestamp: float
    seq: int


class LatestFrame:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._busy = False
        self.dropped = 0
        self.skipped = 0

    def put(self, frame: Frame) -> str | None:
        """Store the frame; returns 'dropped' or 'skipped' when an unread one was replaced."""
        with self._cond:
            replaced = None
            if self._frame is not None:
                replaced = "dropped" if self._busy else "skipped"
                if replaced == "dropped":
                    self.dropped += 1
                else:
                    self.skipped += 1
            self._frame = frame
            self._cond.notify()
            return replaced

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


def is_live_url(source: int | str) -> bool:
    return isinstance(source, str) and source.lower().startswith(_URL_SCHEMES)


class _FfmpegOptions:
    """OpenCV takes FFmpeg's capture options from one process-wide variable, read as each open starts.

    Opens that need the same options run together; one that needs other options waits until those in
    flight are done, so with every camera on the same transport (the usual case) no open ever waits
    for another. Options the user exported themselves come first; ours are appended and win.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._user = os.environ.get(_FFMPEG_OPTIONS, "")
        self._value: str | None = None
        self._users = 0

    @contextlib.contextmanager
    def set(self, options: str) -> Iterator[None]:
        value = f"{self._user}|{options}" if self._user else options
        with self._cond:
            while self._users and self._value != value:
                self._cond.wait()
            if self._value != value:
                os.environ[_FFMPEG_OPTIONS] = value
                self._value = value
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()


_ffmpeg_options = _FfmpegOptions()


def open_source(source: int | str, timeout_s: float = 5.0, transport: Transport = "tcp") -> cv2.VideoCapture:
    if isinstance(source, int):
        return cv2.VideoCapture(source)
    if is_live_url(source):
        # Without these a dead RTSP server blocks read() forever and no fault is ever reported.
        timeout_ms = max(1, round(timeout_s * 1000))
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        with _ffmpeg_options.set(f"rtsp_transport;{transport}"):
            return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(source)


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
    on_replaced: Callable[[str], None] | None = None,
) -> None:
    """Read frames until ``stop`` is set; every dependency is passed in (Frigate's capture shape)."""
    is_file = isinstance(source, str) and not is_live_url(source)
    delay = backoff_min_s
    seq = 0
    while not stop.is_set():
        cap = None if is_file and not Path(source).is_file() else open_source(source, timeout_s, transport)
        try:
            if cap is None or not cap.isOpened():
                status.set(False, "open_failed")
                logger.warning("camera source %s cannot be opened; retrying in %.1f s", redact(source), delay)
            else:
                got_any = _read_until_lost(cap, is_file, loop, mailbox, status, stop, fallback_fps, on_replaced, seq)
                seq += got_any
                if got_any:
                    delay = backoff_min_s
                if not stop.is_set():
                    status.set(False, "stream_lost")
                    logger.warning("camera source %s lost; reconnecting in %.1f s", redact(source), delay)
        except Exception:
            logger.exception("capture of %s failed; reconnecting", redact(source))
            status.set(False, "stream_lost")
        finally:
            if cap is not None:
                cap.release()
        if stop.wait(delay):
            break
        delay = min(delay * 2.0, backoff_max_s)


def _read_until_lost(
    cap: cv2.VideoCapture,
    is_file: bool,
    loop: bool,
    mailbox: LatestFrame,
    status: CaptureStatus,
    stop: threading.Event,
    fallback_fps: float,
    on_replaced: Callable[[str], None] | None,
    seq: int,
) -> int:
    """Returns how many frames were read before the stream ended."""
    fps = cap.get(cv2.CAP_PROP_FPS) if is_file else 0.0
    # A file plays at its own frame rate, like the camera it stands in for.
    period = 1.0 / fps if 0 < fps <= 240 else 1.0 / fallback_fps
    next_due = time.monotonic()
    count = 0
    while not stop.is_set():
        ok, image = cap.read()
        if not ok or image is None:
            if is_file and loop and count:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, image = cap.read()
            if not ok or image is None:
                return count
        now = time.time()
        if status.online is not True:
            status.set(True, None)
        status.last_frame_at = now
        count += 1
        replaced = mailbox.put(Frame(image, now, seq + count))
        if replaced and on_replaced is not None:
            on_replaced(replaced)
        if is_file:
            next_due += period
            wait = next_due - time.monotonic()
            if wait < -1.0:
                next_due = time.monotonic()
            elif wait > 0 and stop.wait(wait):
                break
    return count
