"""A real RTSP camera for the tests: GStreamer's RTSP server (tests/service/rtsp_server.py) run by
Debian's /usr/bin/python3, on a free port, stopped by pid.

The server's packages are Debian's (.ci/run installs them). Where they are missing the RTSP tests
skip, unless FEREDGE_REQUIRE_RTSP=1 (set by .ci/run), where they fail instead. Standard library only,
so that bench/bench_streams.py can serve its cameras with it too.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
from pathlib import Path

SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
REQUIRE_ENV = "FEREDGE_REQUIRE_RTSP"
PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-ugly gstreamer1.0-libav"
)
_CHECK = (
    "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; "
    "Gst.init(None); assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay', 'avidemux', 'jpegdec'))"
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspServer:
    """``mounts``: name -> (clip, protocols), protocols one of any, tcp, udp."""

    def __init__(
        self, workdir: Path, mounts: dict[str, tuple[Path, str]], port: int | None = None, auth: str | None = None
    ) -> None:
        self.port = port or _free_port()
        self.mounts = mounts
        self.auth = auth
        self.log = workdir / f"rtsp-{self.port}.log"
        self.process: subprocess.Popen[str] | None = None

    def url(self, mount: str, credentials: str | None = None) -> str:
        return f"rtsp://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}/{mount}"

    def start(self) -> RtspServer:
        command = [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port)]
        for name, (clip, protocols) in self.mounts.items():
            command += ["--mount", f"{name}={clip}:{protocols}"]
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
        """User plus system CPU time the server has used (it encodes H.264 on the same cores)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGKILL by pid: the camera dies without a goodbye, as a power cut would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None
