"""What the delivery scenarios count: the events a producer's outbox says it produced against those a
persistent subscriber received, lost, duplicated and out of order, on a broker that loses nothing itself."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos_scenarios.producer import produced
from harness.broker import Mosquitto, Subscriber
from service.comms.topics import Topics

EVENTS = Topics().events("+")


def event_broker(workdir: Path, port: int | None = None, persistent: bool = True) -> Mosquitto:
    """A mosquitto that keeps a persistent subscriber's session, with no limit on its queue, across its
    own SIGKILL, so that what the bench counts as lost is what the publisher lost."""
    return Mosquitto(workdir, port, persistent=persistent, max_queued_messages=0 if persistent else None)


def event_subscriber(port: int, qos: int = 1) -> Subscriber:
    """A persistent session (clean_session false) on every camera's events at their QoS, connected."""
    sub = Subscriber(port, (EVENTS,), client_id=f"chaos-sub-{port}", clean_session=False, qos=qos,
                     reconnect_s=(0.1, 0.5))  # fmt: skip
    sub.connected.wait(10)
    return sub


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


def report(scenario: str, qos: int, outbox: Path, sub: Subscriber, kills: int, started: float,
           ok_outbox: bool = True) -> DeliveryReport:  # fmt: skip
    arrivals = [(doc["camera"], doc["id"], doc["timestamp"]) for doc in (m.json() for m in sub.snapshot())]
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


def settle(sub: Subscriber, quiet_s: float = 2.0, timeout: float = 30.0) -> None:
    """Until nothing has arrived for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last, since = sub.count(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.1)
        if sub.count() != last:
            last, since = sub.count(), time.monotonic()

