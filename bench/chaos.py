"""The chaos bench: try to break the service from outside, as an attacker and as a flaky network
would, against real processes on this machine, and print what held.

    .venv/bin/python bench/chaos.py fuzz   --requests 10000     # malformed /infer traffic; 5xx, resets, peak RSS
    .venv/bin/python bench/chaos.py broker --kills 20 --qos 1 2 # broker SIGKILLs under 4 cameras' events
    .venv/bin/python bench/chaos.py crash  --crashes 5          # service kill -9, broker down and mid-delivery
    .venv/bin/python bench/chaos.py swaps  --cycles 100         # promote/rollback under load, corrupt versions
    .venv/bin/python bench/chaos.py all                         # the four, with the defaults above

Events are counted where they are produced, in the outbox itself (SQLite's AUTOINCREMENT sequence
counts every row ever inserted, including the ones an overflow dropped), against what a persistent
QoS 1 subscriber received. Each scenario prints one summary line and exits 1 when what docs/mqtt.md
and docs/http-api.md promise did not hold; docs/performance.md ("Reliability: the chaos bench") has
what it measured.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, free_port, one_face_jpeg
from tests.service.support import HAVE_MOSQUITTO, Mosquitto

# -- the event producer: the service's own publisher and outbox, in a process we can kill ------------


def _produce(args: argparse.Namespace) -> int:
    """A child process: N cameras publishing expression events through the real MqttPublisher."""
    from prometheus_client import CollectorRegistry

    from service.comms.mqtt import MqttPublisher
    from service.comms.outbox import Outbox
    from service.comms.payloads import ExpressionChange
    from service.config import MqttConfig
    from service.metrics import Metrics

    cameras = [f"cam{i}" for i in range(args.cameras)]
    cfg = MqttConfig.model_validate(
        {
            "port": args.port,
            "client_id": f"chaos-producer-{args.port}",
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
            "events_qos": args.qos,
            "discovery": {"enabled": False},
            "outbox": {"flush_timeout_s": 60, "ack_timeout_s": 5, "batch": 32},
        }
    )
    metrics = Metrics(CollectorRegistry(), cameras)
    outbox = Outbox(Path(args.outbox), args.max_messages, metrics)
    pub = MqttPublisher(cfg, outbox, metrics, cameras=[(c, c) for c in cameras])
    pub.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def camera(cam: str) -> None:
        n, last = 0, 0.0
        while not stop.is_set() and (args.count == 0 or n < args.count):
            # Strictly increasing per camera across restarts too: the order check reads it.
            last = max(time.time(), last + 1e-6)
            pub.publish_event(ExpressionChange(
                id=f"{cam}-{os.getpid()}-{n}", camera=cam, track_id=n, label="happy", previous_label=None,
                score=0.5, timestamp=last, model_version=1,
            ))  # fmt: skip
            n += 1
            stop.wait(1.0 / args.rate if args.rate > 0 else 0)

    threads = [threading.Thread(target=camera, args=(c,), daemon=True) for c in cameras] if args.rate >= 0 else []
    for t in threads:
        t.start()
    print("producing", flush=True)
    if args.count:
        for t in threads:
            t.join()
        stop.wait(args.linger)
    else:
        stop.wait()
    for t in threads:
        t.join(5)
    pub.stop()
    return 0


class Producer:
    def __init__(self, workdir: Path, port: int, *, cameras: int = 4, rate: float = 5.0, count: int = 0,
                 qos: int = 1, max_messages: int = 100_000, linger: float = 0.0) -> None:  # fmt: skip
        self.outbox = workdir / "outbox.sqlite3"
        self.log = workdir / "producer.log"
        self.cmd = [sys.executable, str(Path(__file__).resolve()), "_produce", "--port", str(port),
                    "--outbox", str(self.outbox), "--cameras", str(cameras), "--rate", str(rate),
                    "--count", str(count), "--qos", str(qos), "--max-messages", str(max_messages),
                    "--linger", str(linger)]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> Producer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=log, env=env, cwd=ROOT)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "producing": the publisher and its outbox are up
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 90) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout)

    def wait(self, timeout: float = 90) -> None:
        if self.proc is not None:
            self.proc.wait(timeout)


def produced(outbox: Path) -> int:
    """Every row ever inserted, delivered, waiting or dropped."""
    with contextlib.closing(sqlite3.connect(outbox)) as db:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return int(row[0]) if row else 0


def waiting(outbox: Path) -> int:
    with contextlib.closing(sqlite3.connect(outbox)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def intact(outbox: Path) -> bool:
    with contextlib.closing(sqlite3.connect(outbox)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- broker and subscriber ---------------------------------------------------------------------------


def broker(workdir: Path, port: int | None = None, persistent: bool = True) -> Mosquitto:
    """A mosquitto that keeps a persistent subscriber's session across its own SIGKILL (saved on every
    change), so that what the bench counts as lost is what the publisher lost."""
    b = Mosquitto(workdir, port)
    if HAVE_MOSQUITTO and persistent:
        text = b.conf.read_text().replace(
            "persistence false\n",
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\nautosave_on_changes true\n"
            "max_queued_messages 0\n",
        )
        b.conf.write_text(text)
    return b


class EventSubscriber:
    """A persistent session (clean_session false) at the events' QoS, recording every arrival."""

    def __init__(self, port: int, qos: int = 1) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.arrivals: list[tuple[str, str, float]] = []  # (camera, id, event timestamp)
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.qos = qos
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-sub-{port}", clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if not rc.is_failure:
            client.subscribe("fer/+/events", qos=self.qos)

    def _on_message(self, client, userdata, msg) -> None:
        doc = json.loads(msg.payload)
        with self.lock:
            self.arrivals.append((doc["camera"], doc["id"], doc["timestamp"]))

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class DeliveryReport:
    scenario: str
    qos: int
    produced: int
    received: int
    unique: int
    order_violations: int
    kills: int
    intact: bool = True
    seconds: float = 0.0
    gaps: list[str] = field(default_factory=list)  # ids missing between received ones, to look them up

    @property
    def lost(self) -> int:
        return self.produced - self.unique

    @property
    def duplicates(self) -> int:
        return self.received - self.unique

    def line(self) -> str:
        return (f"{self.scenario}: qos {self.qos}, {self.kills} kills in {self.seconds:.0f} s: "
                f"produced {self.produced}, received {self.received} ({self.unique} unique), lost {self.lost}, "
                f"duplicates {self.duplicates}, order violations {self.order_violations}, "
                f"outbox intact {self.intact}" + (f"; missing ids {self.gaps[:5]}" if self.gaps else ""))  # fmt: skip


def report(scenario: str, qos: int, outbox: Path, sub: EventSubscriber, kills: int, started: float,
           ok_outbox: bool = True) -> DeliveryReport:  # fmt: skip
    with sub.lock:
        arrivals = list(sub.arrivals)
    first: dict[str, tuple[str, float]] = {}
    for cam, eid, ts in arrivals:
        first.setdefault(eid, (cam, ts))
    violations = 0
    last: dict[str, float] = {}
    for cam, ts in first.values():  # dicts keep insertion order: first arrivals in arrival order
        if ts < last.get(cam, 0.0):
            violations += 1
        last[cam] = max(ts, last.get(cam, 0.0))
    seen: dict[tuple[str, str], set[int]] = {}
    for eid in first:
        cam, pid, n = eid.rsplit("-", 2)
        seen.setdefault((cam, pid), set()).add(int(n))
    gaps = [f"{cam}-{pid}-{n}" for (cam, pid), ns in sorted(seen.items()) for n in range(max(ns)) if n not in ns]
    return DeliveryReport(scenario, qos, produced(outbox), len(arrivals), len(first), violations, kills,
                          ok_outbox, time.monotonic() - started, gaps)  # fmt: skip


def settle(sub: EventSubscriber, quiet_s: float = 2.0, timeout: float = 30.0) -> None:
    """Until nothing has arrived for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last, since = sub.count(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.1)
        if sub.count() != last:
            last, since = sub.count(), time.monotonic()


def run_broker_kills(workdir: Path, *, kills: int = 20, qos: int = 1, cameras: int = 4, rate: float = 5.0,
                     seed: int = 0) -> DeliveryReport:  # fmt: skip
    """SIGKILL the broker ``kills`` times while the cameras produce; every other outage ends with a
    kill a fraction of a second after the restart, while the backlog is being delivered."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    b = broker(workdir / "broker").start()
    sub = EventSubscriber(b.port, qos)
    sub.subscribed.wait(10)
    started = time.monotonic()
    prod = Producer(workdir, b.port, cameras=cameras, rate=rate, qos=qos).start()
    done = 0
    try:
        while done < kills:
            time.sleep(rng.uniform(1.0, 4.0))
            b.kill()
            done += 1
            time.sleep(rng.uniform(0.5, 2.5))
            b.start()
            if done % 2 == 0 and done < kills:
                time.sleep(rng.uniform(0.05, 0.4))  # mid-delivery: the outage's backlog is draining now
                b.kill()
                done += 1
                time.sleep(rng.uniform(0.3, 1.0))
                b.start()
        time.sleep(1.0)
        prod.stop()  # stops producing, then flushes the outbox to the broker
        settle(sub)
        return report("broker kills", qos, prod.outbox, sub, done, started, intact(prod.outbox))
    finally:
        prod.kill()
        sub.close()
        b.kill()


def run_service_crashes(workdir: Path, *, kills: int = 5, cameras: int = 4, rate: float = 10.0, seed: int = 0,
                        max_messages: int = 100_000) -> DeliveryReport:  # fmt: skip
    """kill -9 the producing service ``kills`` times with the broker down, then as many times again in
    the middle of delivering the backlog; then let a last start deliver what is left."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    b = broker(workdir / "broker", port)
    ok = True
    started = time.monotonic()
    for _ in range(kills):  # broker down: everything waits in the outbox
        prod = Producer(workdir, port, cameras=cameras, rate=rate, max_messages=max_messages).start()
        time.sleep(rng.uniform(0.5, 2.0))
        prod.kill()
        ok = ok and intact(prod.outbox)
    b.start()
    sub = EventSubscriber(port)
    sub.subscribed.wait(10)
    try:
        for _ in range(kills):  # mid-delivery: killed while it drains the backlog and produces more
            prod = Producer(workdir, port, cameras=cameras, rate=rate, max_messages=max_messages).start()
            time.sleep(rng.uniform(0.2, 1.0))
            prod.kill()
            ok = ok and intact(prod.outbox)
        prod = Producer(workdir, port, cameras=cameras, rate=-1, max_messages=max_messages).start()
        deadline = time.monotonic() + 60
        while waiting(prod.outbox) and time.monotonic() < deadline:
            time.sleep(0.1)
        prod.stop()
        settle(sub)
        return report("service crashes", 1, prod.outbox, sub, 2 * kills, started, ok)
    finally:
        sub.close()
        b.kill()


def run_capped_outbox(workdir: Path, *, events: int = 30, max_messages: int = 10) -> DeliveryReport:
    """The bench's own check that it can fail: a capped outbox with the broker down drops events."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    started = time.monotonic()
    Producer(workdir, port, cameras=1, rate=0, count=events, max_messages=max_messages).start().wait()
    b = broker(workdir / "broker", port, persistent=False).start()
    sub = EventSubscriber(port)
    sub.subscribed.wait(10)
    try:
        prod = Producer(workdir, port, cameras=1, rate=-1, max_messages=max_messages).start()
        deadline = time.monotonic() + 30
        while waiting(prod.outbox) and time.monotonic() < deadline:
            time.sleep(0.05)
        prod.stop()
        settle(sub, 1.0)
        return report("capped outbox", 1, prod.outbox, sub, 0, started)
    finally:
        sub.close()
        b.kill()


# -- the service as users run it -----------------------------------------------------------------------


class Service:
    """``python -m service`` with a config of our own; peak RSS from the kernel (VmHWM)."""

    def __init__(self, workdir: Path, config: dict) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {**config, "api": {**config.get("api", {}), "host": "127.0.0.1", "port": self.port}}
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.log = workdir / "service.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> Service:
        import httpx

        env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "service", "--config", str(self.config_path)],
                                         stdout=log, stderr=log, env=env, cwd=ROOT)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError("service did not become ready")

    def status(self, key: str) -> int:
        """VmHWM (peak) or VmRSS, in kB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


# -- fuzz ----------------------------------------------------------------------------------------------


def _png_fix_crcs(data: bytes) -> bytes:
    """Recompute every chunk's CRC, so that a mutation reaches the decoder instead of the CRC check."""
    out, i = bytearray(data[:8]), 8
    while i + 12 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        if i + 12 + length > len(data):
            out += data[i:]
            break
        kind_and_body = data[i + 4 : i + 8 + length]
        out += data[i : i + 4] + kind_and_body + zlib.crc32(kind_and_body).to_bytes(4, "big")
        i += 12 + length
    return bytes(out)


def _claimed_jpeg(jpeg: bytes, width: int, height: int) -> bytes:
    data = bytearray(jpeg)
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _png_header(width: int, height: int) -> bytes:
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0d" + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")


@dataclass
class Inputs:
    jpeg: bytes
    png: bytes
    webp: bytes
    small: bytes  # the well-formed follow-up: a small real JPEG
    wide_png: bytes  # 16384×2441, about 40 KB
    claimed_jpeg: bytes  # 630-odd bytes claiming 6000×6000


def _inputs() -> Inputs:
    import cv2
    import numpy as np

    from bench._common import one_face_frame

    frame = one_face_frame()
    enc = lambda ext, img: cv2.imencode(ext, img)[1].tobytes()  # noqa: E731
    tiny = enc(".jpg", np.full((16, 16, 3), 128, np.uint8))
    wide = np.zeros((2441, 16384, 3), np.uint8)
    wide[::64] = 255
    return Inputs(one_face_jpeg(), enc(".png", frame), enc(".webp", frame), enc(".jpg", cv2.resize(frame, (160, 120))),
                  enc(".png", wide), _claimed_jpeg(tiny, 6000, 6000))  # fmt: skip


Case = tuple[str, str, bytes, dict[str, str]]  # (kind, content type, body, extra headers)


def _mutate(rng: random.Random, data: bytes, flips: int) -> bytes:
    b = bytearray(data)
    for _ in range(flips):
        b[rng.randrange(16, len(b))] = rng.randrange(256)
    return bytes(b)


def _multipart(boundary: str, payload: bytes, name: str = "file") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip


def make_case(rng: random.Random, inp: Inputs) -> Case:
    """One malformed or odd request, drawn from every family the bench knows."""
    kind = rng.choice(["random", "truncated", "mutated_jpeg", "mutated_png", "mutated_webp", "bomb", "multipart",
                       "json", "base64", "headers", "valid"])  # fmt: skip
    img = rng.choice([inp.jpeg, inp.png, inp.webp])
    if kind == "random":
        body = rng.randbytes(rng.choice([0, 1, 3, 12, 100, 5000]))
        if rng.random() < 0.5:
            body = rng.choice([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP"]) + body
        return kind, rng.choice(["image/jpeg", "image/png", "application/octet-stream"]), body, {}
    if kind == "truncated":
        return kind, "image/jpeg", img[: rng.randrange(1, len(img))], {}
    if kind == "mutated_jpeg":
        return kind, "image/jpeg", _mutate(rng, inp.jpeg, rng.choice([1, 5, 50])), {}
    if kind == "mutated_png":
        return kind, "image/png", _png_fix_crcs(_mutate(rng, inp.png, rng.choice([1, 5, 50]))), {}
    if kind == "mutated_webp":
        return kind, "image/webp", _mutate(rng, inp.webp, rng.choice([1, 5, 50])), {}
    if kind == "bomb":
        body = rng.choice([_png_header(30000, 30000) + b"\0" * 64, _png_header(16384, 16384) + b"\0" * 64,
                           inp.claimed_jpeg, inp.wide_png, _claimed_jpeg(inp.jpeg, 16000, 16000),
                           b"RIFF\0\0\0\0WEBPVP8X" + b"\0" * 8 + b"\xff\xff\x3f\xff\xff\x3f" + b"\0" * 32])  # fmt: skip
        return kind, "image/png", body, {}
    if kind == "multipart":
        choice = rng.randrange(7)
        boundary = "x" * rng.choice([1, 70, 256, 257, 300, 2000]) if choice == 0 else "bnd"
        body = _multipart(boundary, img)
        ctype = f"multipart/form-data; boundary={boundary}"
        if choice == 1:
            ctype = "multipart/form-data"
        elif choice == 2:
            body = body[: rng.randrange(1, len(body))]
        elif choice == 3:
            body = _multipart(boundary, img, name="other")
        elif choice == 4:
            body = rng.randbytes(200)
        elif choice == 5:
            body = body.replace(b"\r\n", b"\n")
        return kind, ctype, body, {}
    if kind == "json":
        body = rng.choice([
            b"[" * 1000 + b"]" * 1000, b'{"image": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            b'{"image": "AAAA", "n": ' + b"9" * 5000 + b"}", b'{"image": ' + b"1" * 4400 + b"}", b"\xff\xfe{}", b"null",
            b'{"image": 5}', b'{"image": "x", "extra": 1}', b"{" * 100, b'"' + b"A" * 1000, b'{"image": "\\ud800"}',
            json.dumps({"image": "data:image/jpeg;base64," + base64.b64encode(img).decode()}).encode(),
        ])  # fmt: skip
        return kind, "application/json", body, {}
    if kind == "base64":
        text = base64.b64encode(img).decode()
        text = rng.choice([text[:-3], text.replace("A", "!", 3), "====", text + "\n" + text, "data:,", "A"])
        return kind, "application/json", json.dumps({"image": text}).encode(), {}
    if kind == "headers":
        headers = rng.choice([
            {"X-Request-ID": "x" * 5000}, {"X-Request-ID": "../../etc/passwd"}, {"Accept": "\x7f" * 10},
            {"Content-Encoding": "gzip"}, {"Expect": "100-continue"}, {"Authorization": "Bearer " + "a" * 3000},
        ])  # fmt: skip
        ctype = rng.choice(["image/jpeg; charset=utf-8", "IMAGE/JPEG", "image/jpeg;;;", "text/plain", "",
                            "multipart/form-data; boundary=\"\"", "application/json; charset=latin-1"])  # fmt: skip
        return kind, ctype, img, headers
    return kind, "image/jpeg", img, {}


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    transport_errors: int = 0
    follow_ups: int = 0
    follow_up_resets: int = 0
    health_checks: int = 0
    health_failures: int = 0
    health_max_s: float = 0.0
    slow_ok: int = 0
    slow_total: int = 0
    stalled: int = 0
    stalled_closed: int = 0
    raw_statuses: Counter = field(default_factory=Counter)
    idle_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in {**self.statuses, **self.raw_statuses}.items() if str(s).startswith("5"))

    def ok(self, max_rss_mb: float) -> bool:
        return (self.server_errors == 0 and self.follow_up_resets == 0 and self.health_failures == 0
                and self.peak_rss_mb <= max_rss_mb and self.stalled_closed == self.stalled)  # fmt: skip


def _raw(port: int, data: bytes, *, trickle: float = 0.0, chunk: int = 0, timeout: float = 15) -> str:
    """Send raw bytes (optionally a chunk at a time with pauses) and return the status code or why none."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            if trickle:
                for i in range(0, len(data), chunk):
                    s.sendall(data[i : i + chunk])
                    time.sleep(trickle)
            else:
                s.sendall(data)
            answer = s.recv(64)
        except (TimeoutError, ConnectionError):
            return "no answer"
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"


def run_fuzz(workdir: Path, *, requests: int = 10_000, clients: int = 4, stalled: int = 300, seed: int = 0,
             max_rss_mb: float = 400) -> FuzzReport:  # fmt: skip
    import httpx

    rng = random.Random(seed)
    inp = _inputs()
    workdir.mkdir(parents=True, exist_ok=True)
    svc = Service(workdir, {
        "state_dir": str(workdir / "state"), "log_level": "WARNING", "mqtt": {"enabled": False},
        "model": {"store": str(ROOT / "model_store" / "seed"), "watch_interval_s": 0},
        "api": {"header_timeout_s": 3, "body_timeout_s": 3},
    }).start()  # fmt: skip
    rep = FuzzReport()
    rep.idle_rss_mb = svc.status("VmRSS") / 1024
    stop = threading.Event()
    lock = threading.Lock()
    started = time.monotonic()

    def health() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                ok = httpx.get(f"{svc.url}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                ok = False
            with lock:
                rep.health_checks += 1
                rep.health_failures += not ok
                rep.health_max_s = max(rep.health_max_s, time.monotonic() - t0)
            stop.wait(0.5)

    cases = [make_case(rng, inp) for _ in range(requests)]
    todo = iter(range(requests))

    def client(worker: int) -> None:
        crng = random.Random(seed * 100 + worker)
        with httpx.Client(base_url=svc.url, timeout=30) as http:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                kind, ctype, body, extra = cases[i]
                headers = {**({"Content-Type": ctype} if ctype else {}), **extra}
                try:
                    status = http.post("/infer", content=body, headers=headers).status_code
                except httpx.TransportError:
                    status = "transport error"
                follow = status != 200 or crng.random() < 0.1
                reset = False
                if follow:  # the well-formed follow-up, on the same client (and keep-alive connection)
                    try:
                        reset = http.post("/infer", content=inp.small, headers={"Content-Type": "image/jpeg"}
                                          ).status_code != 200  # fmt: skip
                    except httpx.TransportError:
                        reset = True
                with lock:
                    rep.requests += 1
                    rep.kinds[kind] += 1
                    rep.statuses[status] += 1
                    rep.transport_errors += status == "transport error"
                    rep.follow_ups += follow
                    rep.follow_up_resets += reset

    hthread = threading.Thread(target=health, daemon=True)
    hthread.start()
    workers = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for w in workers:
        w.start()

    # Alongside: slow bodies that arrive in time, stalled bodies, bad framing, then the stalled connections.
    head = b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
    small = inp.small
    raw_cases = [
        lambda: _raw(svc.port, head % len(small) + small, trickle=0.05, chunk=max(1, len(small) // 20)),  # ~1 s
        lambda: _raw(svc.port, head % (len(small) * 2) + small),  # the rest never comes: 408
        lambda: _raw(svc.port, b"POST /infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                               b"Content-Type: image/jpeg\r\n\r\nzz\r\nbad\r\n0\r\n\r\n"),
        lambda: _raw(svc.port, b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n"),
        lambda: _raw(svc.port, b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        lambda: _raw(svc.port, b"GARBAGE\r\n\r\n"),
        lambda: _raw(svc.port, b"POST /infer HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000 + b"\r\n\r\n"),
    ]
    for i in range(40):
        which = i % len(raw_cases)
        status = raw_cases[which]()
        with lock:
            rep.raw_statuses[status] += 1
            if which == 0:
                rep.slow_total += 1
                rep.slow_ok += status == "200"
    for w in workers:
        w.join()

    rep.stalled = stalled
    conns = []
    for i in range(stalled):
        s = socket.create_connection(("127.0.0.1", svc.port))
        if i % 2:
            s.sendall(b"POST /infer HTTP/1.1\r\nHost: x\r\n")
        conns.append(s)
    deadline = time.monotonic() + 3 + 5  # the header timeout, and slack for 2 shared cores
    for s in conns:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            rep.stalled_closed += 1
        s.close()
    stop.set()
    hthread.join(10)
    rep.peak_rss_mb = svc.status("VmHWM") / 1024
    rep.seconds = time.monotonic() - started
    svc.stop()
    return rep


# -- swaps ---------------------------------------------------------------------------------------------


@dataclass
class SwapReport:
    cycles: int = 0
    requests: int = 0
    failed: int = 0
    foreign_versions: int = 0
    label_mismatches: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # fault -> how it was refused, or what went wrong
    restart_ok: bool = False
    fallback_ok: bool = False
    seconds: float = 0.0

    def ok(self) -> bool:
        refused_all = all(v.startswith("refused") for v in self.refused.values())
        return (self.failed == 0 and self.foreign_versions == 0 and self.label_mismatches == 0 and refused_all
                and self.restart_ok and self.fallback_ok)  # fmt: skip


def run_swaps(workdir: Path, *, cycles: int = 100, clients: int = 4) -> SwapReport:
    import httpx

    from bench._faults import FAULTS, publish_copy
    from model_store import ModelStore

    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "store"
    shutil.copytree(ROOT / "model_store" / "seed", root, ignore=shutil.ignore_patterns(".tmp-*", ".aliases-*"))
    store = ModelStore(root)
    v1 = store.resolve("ean", "stable")
    labels1 = store.manifest("ean", v1).labels
    v2 = publish_copy(store, labels=list(reversed(labels1)))
    labels = {v1: labels1, v2: list(reversed(labels1))}
    token = {"Authorization": "Bearer chaos"}
    config = {"state_dir": str(workdir / "state"), "log_level": "WARNING", "mqtt": {"enabled": False},
              "model": {"store": str(root), "watch_interval_s": 0.5}, "api": {"token": "chaos"}}  # fmt: skip
    svc = Service(workdir, config).start()
    rep = SwapReport()
    started = time.monotonic()
    stop = threading.Event()
    lock = threading.Lock()
    jpeg = one_face_jpeg()

    def hammer() -> None:
        with httpx.Client(base_url=svc.url, timeout=30) as http:
            while not stop.is_set():
                try:
                    resp = http.post("/infer", content=jpeg, headers={"Content-Type": "image/jpeg"})
                    body = resp.json() if resp.status_code == 200 else None
                except (httpx.TransportError, ValueError):
                    resp, body = None, None
                with lock:
                    rep.requests += 1
                    if body is None:
                        rep.failed += 1
                        continue
                    version = body["model_version"]
                    if version not in labels:
                        rep.foreign_versions += 1
                    elif body["faces"] and list(body["faces"][0]["scores"]) != labels[version]:
                        rep.label_mismatches += 1

    threads = [threading.Thread(target=hammer) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=svc.url, timeout=60, headers=token) as admin:
            for _ in range(cycles):
                a = admin.post("/models/promote", json={"version": v2})
                b = admin.post("/models/rollback", json={"alias": "stable"})
                rep.cycles += a.status_code == 200 and b.status_code == 200
            for name, make in FAULTS.items():
                before = store.aliases("ean")
                bad = make(store)
                http_resp = admin.post("/models/promote", json={"version": bad})
                cli = subprocess.run([sys.executable, "-m", "model_store", "--root", str(root), "promote", "ean",
                                      str(bad)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
                after = store.aliases("ean")
                served = admin.get("/models").json()["served"]["version"]
                if http_resp.status_code == 422 and cli.returncode != 0 and after == before and served == v1:
                    rep.refused[name] = f"refused ({http_resp.json()['error']['code']}, CLI exit {cli.returncode})"
                else:
                    rep.refused[name] = f"NOT refused: HTTP {http_resp.status_code}, CLI {cli.returncode}, {after}"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    svc.stop()
    rep.restart_ok = _restarts(svc, v1)
    # As an old CLI or a hand edit would leave it: the alias on a bad version. It still starts.
    store.set_alias("ean", "stable", max(store.versions("ean")))
    rep.fallback_ok = _restarts(svc, v1, fallback=True)
    rep.seconds = time.monotonic() - started
    return rep


def _restarts(svc: Service, expect: int, fallback: bool = False) -> bool:
    import httpx

    try:
        svc.start()
    except RuntimeError:
        return False
    try:
        served = httpx.get(f"{svc.url}/models").json()["served"]["version"]
        metrics = httpx.get(f"{svc.url}/metrics").text
        return served == expect and (not fallback or 'fer_model_reloads_total{result="fallback"} 1.0' in metrics)
    finally:
        svc.stop()


# -- command line ----------------------------------------------------------------------------------------


def _scenarios(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, bool]]:
    def header(what: str) -> None:
        print(f"\n== {what} (machine: {os.cpu_count()} cores, shared)", flush=True)

    if args.cmd in ("fuzz", "all"):
        header("fuzz")
        r = run_fuzz(workdir / "fuzz", requests=args.requests, stalled=args.stalled)
        print(f"{r.requests} requests in {r.seconds:.0f} s; statuses {dict(sorted(r.statuses.items(), key=str))}")
        print(f"kinds {dict(sorted(r.kinds.items()))}")
        print(f"raw-socket requests: {dict(r.raw_statuses)}; slow bodies answered 200: {r.slow_ok}/{r.slow_total}")
        print(f"5xx: {r.server_errors}; transport errors on fuzzed requests: {r.transport_errors}; resets on "
              f"{r.follow_ups} well-formed follow-ups: {r.follow_up_resets}")  # fmt: skip
        print(f"/healthz: {r.health_checks} checks, {r.health_failures} failed, slowest {r.health_max_s * 1000:.0f} ms")
        print(f"stalled connections closed by the server: {r.stalled_closed}/{r.stalled}")
        print(f"RSS: idle {r.idle_rss_mb:.0f} MB, peak {r.peak_rss_mb:.0f} MB (limit {args.max_rss_mb:.0f})")
        yield "fuzz", r.ok(args.max_rss_mb)
    if args.cmd in ("broker", "all"):
        for qos in args.qos:
            header(f"broker kills, events at QoS {qos}")
            r = run_broker_kills(workdir / f"broker-qos{qos}", kills=args.kills, qos=qos)
            print(r.line())
            yield f"broker qos {qos}", r.lost == 0 and r.order_violations == 0 and r.intact
    if args.cmd in ("crash", "all"):
        header("service crashes")
        r = run_service_crashes(workdir / "crash", kills=args.crashes)
        print(r.line())
        yield "crash", r.lost == 0 and r.intact
    if args.cmd in ("swaps", "all"):
        header("swaps")
        s = run_swaps(workdir / "swaps", cycles=args.cycles)
        print(f"{s.cycles}/{args.cycles} promote/rollback cycles in {s.seconds:.0f} s under 4 clients: {s.requests} "
              f"requests, {s.failed} failed, {s.foreign_versions} from another version, "
              f"{s.label_mismatches} with another version's labels")  # fmt: skip
        for name, how in s.refused.items():
            print(f"  {name}: {how}")
        print(f"restart afterwards: {'ok' if s.restart_ok else 'FAILED'}; start on an alias left on a bad version: "
              f"{'served the previous good version, counted' if s.fallback_ok else 'FAILED'}")  # fmt: skip
        yield "swaps", s.ok()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("fuzz", "broker", "crash", "swaps", "all"):
        s = sub.add_parser(name)
        s.add_argument("--requests", type=int, default=10_000)
        s.add_argument("--stalled", type=int, default=300)
        s.add_argument("--max-rss-mb", type=float, default=400)
        s.add_argument("--kills", type=int, default=20)
        s.add_argument("--qos", type=int, nargs="+", default=[1, 2], choices=[1, 2])
        s.add_argument("--crashes", type=int, default=5)
        s.add_argument("--cycles", type=int, default=100)
        s.add_argument("--keep", action="store_true", help="keep the work directory (logs, outboxes)")
    s = sub.add_parser("_produce")
    for opt, typ in (("--port", int), ("--outbox", str), ("--cameras", int), ("--rate", float), ("--count", int),
                     ("--qos", int), ("--max-messages", int), ("--linger", float)):  # fmt: skip
        s.add_argument(opt, type=typ, required=True)
    args = p.parse_args(argv)
    if args.cmd == "_produce":
        return _produce(args)
    workdir = Path(tempfile.mkdtemp(prefix="fer-chaos-"))
    try:
        results = list(_scenarios(args, workdir))
    finally:
        if args.keep:
            print(f"work directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [name for name, ok in results if not ok]
    print("\n" + ("all held" if not failed else f"did not hold: {', '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
