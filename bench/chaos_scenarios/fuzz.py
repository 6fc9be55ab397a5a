"""Fuzz: malformed and odd /infer traffic against `python -m service` from several clients (random bytes;
truncated and mutated JPEG, PNG and WebP; decompression bombs; bad multipart, deep JSON, bad base64, odd
headers; bodies built to cost far more than their size: a 400-scan JPEG, a wide progressive one, 10 MB of
JSON `[],`, 200k multipart parts), slow and stalled bodies, bad framing and stalled connections over raw
sockets, with /healthz polled throughout. Nothing may answer 5xx, reset a well-formed follow-up, fail a
health check, leave a stalled connection open or take the service past its memory limit."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import socket
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np

from harness.hostile import json_flood, many_scans_jpeg, multipart_flood, wide_progressive_jpeg
from harness.images import demo_face_frame, demo_face_jpeg, encode, lying_png
from harness.service import ServiceProcess
from harness.store import SEED_STORE


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
    lying_png: bytes  # 67 bytes, 1×1, whose IDAT claims 1.7 GB
    costly: list[tuple[bytes, str]]  # the second review's four (harness/hostile.py), with their content types


def _inputs() -> Inputs:
    frame = demo_face_frame()
    tiny = encode(np.full((16, 16, 3), 128, np.uint8))
    wide = np.zeros((2441, 16384, 3), np.uint8)
    wide[::64] = 255
    costly = [(many_scans_jpeg(), "image/jpeg"), (wide_progressive_jpeg(), "image/jpeg"),
              (json_flood(), "application/json"), multipart_flood()]  # fmt: skip
    return Inputs(demo_face_jpeg(), encode(frame, ".png"), encode(frame, ".webp"),
                  encode(cv2.resize(frame, (160, 120))), encode(wide, ".png"),
                  _claimed_jpeg(tiny, 6000, 6000), lying_png(), costly)  # fmt: skip


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
                       "json", "base64", "headers", "costly", "valid"])  # fmt: skip
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
                           inp.claimed_jpeg, inp.wide_png, _claimed_jpeg(inp.jpeg, 16000, 16000), inp.lying_png,
                           b"RIFF\0\0\0\0WEBPVP8X" + b"\0" * 8 + b"\xff\xff\x3f\xff\xff\x3f" + b"\0" * 32])  # fmt: skip
        return kind, "image/png", body, {}
    if kind == "costly":  # many scans, a wide progressive JPEG, 10 MB of `[],`, 200k multipart parts
        body, ctype = rng.choice(inp.costly)
        return kind, ctype, body, {}
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
    lying_statuses: Counter = field(default_factory=Counter)  # the lying PNG, from every client at once
    idle_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        every = [*self.statuses.items(), *self.raw_statuses.items(), *self.lying_statuses.items()]
        return sum(n for s, n in every if str(s).startswith("5"))

    def ok(self, max_rss_mb: float) -> bool:
        return (self.server_errors == 0 and self.follow_up_resets == 0 and self.health_failures == 0
                and self.peak_rss_mb <= max_rss_mb and self.stalled_closed == self.stalled
                and set(self.lying_statuses) == {422})  # fmt: skip


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
             lying_rounds: int = 5) -> FuzzReport:
    rng = random.Random(seed)
    inp = _inputs()
    svc = ServiceProcess.configured(workdir, {
        "state_dir": str(workdir / "state"), "log_level": "WARNING", "mqtt": {"enabled": False},
        "model": {"store": str(SEED_STORE), "watch_interval_s": 0},
        "api": {"header_timeout_s": 3, "body_timeout_s": 3},
    }).start()  # fmt: skip
    rep = FuzzReport()
    rep.idle_rss_mb = svc.memory_kb("VmRSS") / 1024
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
                status: int | str
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
    head = b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
    small = inp.small
    raw_cases = [
        lambda: _raw(svc.port, head % len(small) + small, trickle=0.05, chunk=max(1, len(small) // 20)),  # ~1 s
        lambda: _raw(svc.port, head % (len(small) * 2) + small),  # the rest never comes: 408
        lambda: _raw(svc.port, b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                               b"Content-Type: image/jpeg\r\n\r\nzz\r\nbad\r\n0\r\n\r\n"),
        lambda: _raw(svc.port, b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                               b"Content-Length: 7\r\n\r\n"),
        lambda: _raw(svc.port, b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n"),
        lambda: _raw(svc.port, b"GARBAGE\r\n\r\n"),
        lambda: _raw(svc.port, b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"),
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

    # The lying PNG from every client at once, several times over: four at once took the service's
    # high-water mark to 5.6 GB before the chunk walk.
    barrier = threading.Barrier(clients)

    def liar() -> None:
        with httpx.Client(base_url=svc.url, timeout=30) as http:
            for _ in range(lying_rounds):
                barrier.wait()
                try:
                    status: int | str = http.post("/infer", content=inp.lying_png,
                                                  headers={"Content-Type": "image/png"}).status_code
                except httpx.TransportError:
                    status = "transport error"
                with lock:
                    rep.lying_statuses[status] += 1

    liars = [threading.Thread(target=liar) for _ in range(clients)]
    for t in liars:
        t.start()
    for t in liars:
        t.join()

    rep.stalled = stalled
    conns = []
    for i in range(stalled):
        s = socket.create_connection(("127.0.0.1", svc.port))
        if i % 2:
            s.sendall(b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\n")
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
    rep.peak_rss_mb = svc.memory_kb("VmHWM") / 1024
    rep.seconds = time.monotonic() - started
    svc.stop()
    return rep

