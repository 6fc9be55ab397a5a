"""Real RTSP cameras for tests and benchmarks: GStreamer's RTSP server (harness/rtsp_server.py) run by
Debian's /usr/bin/python3, on a free port, stopped by pid, serving H.264 encoded once beforehand.

    mkv = encode_h264(clip, tmp / "face.mkv")                  # once: the only encoding there is
    server = RtspServer(tmp, {"cam": (mkv, "any")}).start()    # then only demux and packetise
    server.url("cam")                                          # rtsp://127.0.0.1:PORT/cam

The server's packages are Debian's (.ci/run installs them). Where they are missing the RTSP tests
skip, unless FEREDGE_REQUIRE_RTSP=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from pathlib import Path

from harness.machine import cpu_seconds, free_port

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
REQUIRE_ENV = "FEREDGE_REQUIRE_RTSP"
# h264parse is in plugins-bad; x264enc (the one-off encode) in plugins-ugly; the MJPEG clips decode
# with plugins-good.
PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav"
)
ELEMENTS = ("x264enc", "h264parse", "matroskamux", "matroskademux", "rtph264pay", "avidemux", "jpegdec")
_CHECK = (
    "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; "
    f"Gst.init(None); assert all(Gst.ElementFactory.find(e) for e in {ELEMENTS!r})"
)


@functools.cache
def rtsp_server_missing() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} does not exist"
    done = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60)
    if done.returncode:
        return f"GStreamer's RTSP server is not installed (apt-get install {PACKAGES})"
    return None


def require_rtsp_server() -> None:
    import pytest

    why = rtsp_server_missing()
    if why is None:
        return
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set but {why}")
    pytest.skip(why)


def encode_h264(clip: Path, out: Path, fps: int = 15, width: int = 640, height: int = 480) -> Path:
    """``clip`` (anything GStreamer decodes) as H.264 in Matroska at ``out``: the file a mount serves.

    A served mount ends with its file, so the clip must outlast whatever streams it."""
    command = [SYSTEM_PYTHON, str(SERVER), "encode", "--clip", str(clip), "--out", str(out), "--fps", str(fps),
               "--width", str(width), "--height", str(height)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"encoding {clip} failed: {done.stderr[-2000:]}")
    return out


class RtspServer:
    """``mounts``: name -> (file from `encode_h264`, protocols), protocols one of any, tcp, udp."""

    def __init__(
        self, workdir: Path, mounts: dict[str, tuple[Path, str]], port: int | None = None, auth: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.mounts = mounts
        self.auth = auth
        self.log = workdir / f"rtsp-{self.port}.log"
        self.process: subprocess.Popen[str] | None = None

    def url(self, mount: str, credentials: str | None = None) -> str:
        return f"rtsp://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}/{mount}"

    def start(self) -> RtspServer:
        command = [SYSTEM_PYTHON, str(SERVER), "serve", "--port", str(self.port)]
        for name, (path, protocols) in self.mounts.items():
            command += ["--mount", f"{name}={path}:{protocols}"]
        if self.auth:
            command += ["--auth", self.auth]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "ready" once bound; EOF if it died
        if line.strip() != "ready":
            self.kill()
            raise RuntimeError(f"the RTSP server did not start: {self.log.read_text()[-2000:]}")
        return self

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used (it shares the cores with the service)."""
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def kill(self) -> None:
        """SIGKILL by pid: the camera dies without a goodbye, as a power cut would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None
