"""Broker kills: SIGKILL the broker again and again while four cameras publish events, some of the
kills while the backlog of the last outage is being delivered; nothing may be lost or reordered."""

from __future__ import annotations

import random
import time
from pathlib import Path

from bench.chaos_scenarios.delivery import DeliveryReport, event_broker, event_subscriber, report, settle
from bench.chaos_scenarios.producer import Producer, intact


def run_broker_kills(workdir: Path, *, kills: int = 20, qos: int = 1, cameras: int = 4, rate: float = 5.0,
                     seed: int = 0) -> DeliveryReport:  # fmt: skip
    """SIGKILL the broker ``kills`` times while the cameras produce; every other outage ends with a
    kill a fraction of a second after the restart, while the backlog is being delivered."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    b = event_broker(workdir / "broker").start()
    sub = event_subscriber(b.port, qos)
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
