"""Real components for the service tests: a mosquitto broker (amqtt where no mosquitto is installed), a
recording subscriber, a gated TCP proxy (to decide when the service may reconnect), a uvicorn server in a
thread, and clips and images built from a real face."""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

SEED_STORE = Path(__file__).resolve().parents[2] / "model_store" / "seed"
FER_VAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "fer2013" / "val.npz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# -- broker ---------------------------------------------------------------------------------------

# TEST_WITHOUT_MOSQUITTO=1 acts as if mosquitto were not installed, to exercise the amqtt fallback
# (not FER_-prefixed: the service reads FER_* variables as settings).
HAVE_MOSQUITTO = not os.environ.get("TEST_WITHOUT_MOSQUITTO") and (
    shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()
)
# Only when no mosquitto exists: a Python broker (amqtt, in the dev extra), so `make test` passes on a fresh machine.
HAVE_AMQTT = importlib.util.find_spec("amqtt") is not None
HAVE_BROKER = HAVE_MOSQUITTO or HAVE_AMQTT

# Run in a subprocess, so that kill() is still a real crash: argv is the JSON config, then the log file.
_AMQTT_MAIN = """
import asyncio, json, logging, sys
from amqtt.broker import Broker
logging.basicConfig(filename=sys.argv[2], level=logging.INFO)
logging.getLogger("transitions").setLevel(logging.WARNING)
async def main():
    with open(sys.argv[1]) as f:
        broker = Broker(json.load(f))
    await broker.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


class Mosquitto:
    """A mosquitto on a free port; kill() is SIGKILL, a crash, not a clean stop.

    Where no mosquitto is installed, the same on an amqtt broker: anonymous TCP on 127.0.0.1, nothing kept
    across a restart. Tests that need mosquitto itself (password files, TLS) check HAVE_MOSQUITTO.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        if not HAVE_MOSQUITTO:
            self.name = "amqtt"
            self.conf = workdir / "amqtt.json"
            self.log = workdir / "amqtt.log"
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            self.conf.write_text(json.dumps(config))
            self.command = [sys.executable, "-c", _AMQTT_MAIN, str(self.conf), str(self.log)]
            return
        self.name = "mosquitto"
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # As root, mosquitto would switch to the `mosquitto` user, who cannot enter pytest's tmp dirs.
            f"user {getpass.getuser()}\nlog_dest file {self.log}\n"
        )
        self.command = [self.binary, "-c", str(self.conf)]

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # A Python interpreter importing amqtt takes longer to come up than mosquitto does.
        deadline = time.monotonic() + (10 if HAVE_MOSQUITTO else 30)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text() if self.log.exists() else ''}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not start listening")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Records every message on the subscribed topics; reconnects and re-subscribes by itself."""

    def __init__(
        self, port: int, topics: tuple[str, ...] = ("#",), client_id: str | None = None, clean_session: bool = True
    ) -> None:
        """``clean_session=False`` with a fixed ``client_id``: the broker queues for it while it is away."""
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._topics = topics
        self.connected = threading.Event()
        client_id = client_id or f"test-sub-{port}-{id(self)}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        client.subscribe([(t, 1) for t in self._topics])
        # Give the SUBACK a moment before anyone relies on the subscription.
        threading.Timer(0.1, self.connected.set).start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # amqtt 0.12 also hands a connecting client the retained messages matching other clients'
        # subscriptions; drop what this subscriber never asked for (mosquitto never sends it).
        if not HAVE_MOSQUITTO and not any(mqtt.topic_matches_sub(t, msg.topic) for t in self._topics):
            return
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self, topic: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Message]], Any], timeout: float = 10.0, what: str = "message") -> Any:
        return wait_until(lambda: predicate(self.snapshot()), timeout, what=what)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class GatedProxy:
    """A TCP forwarder whose gate decides when clients get through to the broker."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = threading.Event()
        self.open.set()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def sever(self) -> None:
        """Cut every open connection, as a network failure would (the broker then sends Wills)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        with self._lock:
            for s in self._conns:
                with contextlib.suppress(OSError):
                    s.close()


# -- HTTP -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def live_server(app: Any, config: Callable[[int], uvicorn.Config] | None = None) -> Iterator[str]:
    """A real uvicorn on a free port, in a thread; yields the base URL. ``config(port)`` builds its
    configuration (default: plain uvicorn on 127.0.0.1)."""
    port = free_port()
    cfg = config(port) if config else uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                     lifespan="on")
    server = uvicorn.Server(cfg)
    # As the entry point does: open dashboard streams end when the server is asked to exit.
    app.state.exiting = lambda: server.should_exit
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 60, what="uvicorn start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


# -- faces ----------------------------------------------------------------------------------------


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def face_crop() -> np.ndarray:
    """The astronaut's head with some margin, as the clips paste it."""
    return astronaut_bgr()[0:240, 104:344].copy()


def one_face_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A 640×480 scene with exactly one real face."""
    from service.demo import Segment, background, render

    return render(background(width, height), face_crop(), Segment(1.0, x=0.5, size=220), 0.0)


def encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def copy_store(dst: Path) -> Path:
    """The seed store, copied so a test can publish into it (temporary publish dirs are skipped)."""
    shutil.copytree(SEED_STORE, dst, ignore=shutil.ignore_patterns(".tmp-*", ".aliases-*"))
    return dst


# The astronaut's face inside face_crop(), as YuNet and yuface box it: x, y, w, h.
FACE_IN_CROP = (74, 63, 89, 112)


def pasted_face_frame(face_width: int, x: int = 320, y: int = 240, width: int = 640, height: int = 480) -> tuple[
    np.ndarray, tuple[int, int, int, int]
]:
    """The astronaut's head pasted into a face-free 640×480 scene so that her face is ``face_width``
    pixels wide and centred on (x, y); returns the frame and where the face is."""
    from service.demo import background

    frame = background(width, height)
    crop = face_crop()
    scale = face_width / FACE_IN_CROP[2]
    side = round(crop.shape[0] * scale)
    head = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    fx, fy, fw, fh = (round(v * scale) for v in FACE_IN_CROP)
    left, top = x - fx - fw // 2, y - fy - fh // 2
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    frame[y0:y1, x0:x1] = head[y0 - top : y1 - top, x0 - left : x1 - left]
    return frame, (left + fx, top + fy, fw, fh)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
