"""Service crashes: kill -9 the publishing process with the broker down and while it delivers its
backlog; its outbox must stay intact and deliver everything at the next start. Also the bench's own
check that it can fail: a capped outbox with the broker down drops events, and they are counted."""

from __future__ import annotations

import random
import time
from pathlib import Path

from bench.chaos_scenarios.delivery import DeliveryReport, event_broker, event_subscriber, report, settle
from bench.chaos_scenarios.producer import Producer, intact, waiting
from harness.machine import free_port


def run_service_crashes(workdir: Path, *, kills: int = 5, cameras: int = 4, rate: float = 10.0, seed: int = 0,
                        max_messages: int = 100_000) -> DeliveryReport:  # fmt: skip
    """kill -9 the producing service ``kills`` times with the broker down, then as many times again in
    the middle of delivering the backlog; then let a last start deliver what is left."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    b = event_broker(workdir / "broker", port)
    ok = True
    started = time.monotonic()
    for _ in range(kills):  # broker down: everything waits in the outbox
        prod = Producer(workdir, port, cameras=cameras, rate=rate, max_messages=max_messages).start()
        time.sleep(rng.uniform(0.5, 2.0))
        prod.kill()
        ok = ok and intact(prod.outbox)
    b.start()
    sub = event_subscriber(port)
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
    """A capped outbox with the broker down drops events; the report must count them as lost."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    started = time.monotonic()
    Producer(workdir, port, cameras=1, rate=0, count=events, max_messages=max_messages).start().wait()
    b = event_broker(workdir / "broker", port, persistent=False).start()
    sub = event_subscriber(port)
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
