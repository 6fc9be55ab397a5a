"""The event producer of the delivery scenarios: the service's own MqttPublisher and SQLite outbox, N
cameras publishing expression events, in a process of its own that a scenario can SIGKILL.

    python -m bench.chaos_scenarios.producer --port 1883 --outbox outbox.sqlite3 --cameras 4 --rate 5

What it produced is read from the outbox afterwards: SQLite's AUTOINCREMENT sequence counts every row
ever inserted, including those an overflow dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench._common import ROOT


def produce(args: argparse.Namespace) -> int:
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
    """The producer process: ``rate`` events/s per camera (0: as fast as it can, below 0: none, only
    delivering what the outbox holds), ``count`` events per camera then ``linger`` s (0: until stopped)."""

    def __init__(self, workdir: Path, port: int, *, cameras: int = 4, rate: float = 5.0, count: int = 0,
                 qos: int = 1, max_messages: int = 100_000, linger: float = 0.0) -> None:  # fmt: skip
        self.outbox = workdir / "outbox.sqlite3"
        self.log = workdir / "producer.log"
        self.cmd = [sys.executable, "-m", "bench.chaos_scenarios.producer", "--port", str(port),
                    "--outbox", str(self.outbox), "--cameras", str(cameras), "--rate", str(rate), "--count", str(count),
                    "--qos", str(qos), "--max-messages", str(max_messages), "--linger", str(linger)]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

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
        """SIGTERM: it stops producing, then flushes its outbox to the broker."""
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
        return bool(db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for opt, typ in (("--port", int), ("--outbox", str), ("--cameras", int), ("--rate", float), ("--count", int),
                     ("--qos", int), ("--max-messages", int), ("--linger", float)):  # fmt: skip
        p.add_argument(opt, type=typ, required=True)
    return produce(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
