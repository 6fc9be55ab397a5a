"""A fleet on one broker: events/s through a real mosquitto and end-to-end latency for K gateways.

Each simulated gateway is a process running the service's own MqttPublisher (gateway_id, SQLite
outbox, QoS 1, the same ExpressionChange payloads the pipeline publishes), offering `--rate`
events/s spread over its cameras (0: as fast as its outbox drains). One dashboard subscribes to
`fer/+/events` on the broker, as docs/fleet.md has it, and measures what arrives. Latency is the
event's `timestamp` (set as the gateway hands it to the publisher) to its arrival at the dashboard:
outbox write, delivery thread, broker and subscriber together, on one machine's clock.

    .venv/bin/python bench/bench_fleet.py --gateways 1 4 8 --rate 50 --duration 15
    .venv/bin/python bench/bench_fleet.py --gateways 1 4 8 --rate 0 --duration 10    # saturate
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

from bench._common import percentile
from harness.broker import Mosquitto, Subscriber
from service.comms.topics import Topics

CAMERAS_PER_GATEWAY = 4


def gateway_main(port: int, gateway_id: str, rate: float, duration: float, workdir: str, sent: mp.Queue) -> None:
    from prometheus_client import CollectorRegistry

    from service.comms.mqtt import MqttPublisher
    from service.comms.outbox import Outbox
    from service.comms.payloads import ExpressionChange
    from service.config import MqttConfig
    from service.metrics import Metrics

    cameras = [f"{gateway_id}-cam{i}" for i in range(CAMERAS_PER_GATEWAY)]
    metrics = Metrics(CollectorRegistry(), cameras)
    cfg = MqttConfig.model_validate({"port": port, "discovery": {"enabled": False},
                                     "outbox": {"flush_timeout_s": 30, "batch": 64}})  # fmt: skip
    outbox = Outbox(Path(workdir) / f"outbox-{gateway_id}.sqlite3", 1_000_000, metrics)
    pub = MqttPublisher(cfg, outbox, metrics, [(c, c) for c in cameras], gateway_id)
    pub.start()
    while not pub.connected:
        time.sleep(0.01)
    n, start = 0, time.monotonic()
    while (now := time.monotonic()) - start < duration:
        if rate > 0 and n >= rate * (now - start):
            time.sleep(min(0.005, 1.0 / rate))
            continue
        cam = cameras[n % len(cameras)]
        pub.publish_event(ExpressionChange(id=f"{gateway_id}-{n}", camera=cam, track_id=1, label="happy",
                                           previous_label="neutral", score=0.9, timestamp=time.time(),
                                           model_version=1))  # fmt: skip
        n += 1
        if rate <= 0 and len(outbox) > 2000:
            time.sleep(0.002)  # saturate the broker, not the disk
    pub.stop()
    sent.put((gateway_id, n, len(outbox)))


def run(k: int, rate: float, duration: float, port: int, workdir: Path, dash: Subscriber) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    sent: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=gateway_main, args=(port, f"gw{i}", rate, duration, str(workdir), sent))
             for i in range(k)]  # fmt: skip
    before = dash.count()
    for p in procs:
        p.start()
    results = [sent.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join(30)
    total = sum(n for _, n, _ in results)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and dash.count() - before < total:
        time.sleep(0.1)
    time.sleep(0.5)
    arrivals = [(m.received, m.json()["timestamp"]) for m in dash.snapshot()[before:]]
    times = sorted(a for a, _ in arrivals)
    span = (times[-1] - times[0]) if len(times) > 1 else float("nan")
    lat = [(a - ts) * 1000 for a, ts in arrivals]
    return {
        "gateways": k,
        "sent": total,
        "received": len(arrivals),
        "left_in_outboxes": sum(left for _, _, left in results),
        "events_s": len(arrivals) / span if span else float("nan"),
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--rate", type=float, default=50.0, help="events/s offered per gateway; 0: as fast as possible")
    ap.add_argument("--duration", type=float, default=15.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker", max_queued_messages=1_000_000).start()
        # The dashboard of docs/fleet.md: every camera's events on the shared prefix.
        dash = Subscriber(broker.port, (Topics().events("+"),), client_id="bench-dashboard")
        dash.connected.wait(10)
        try:
            rows = [run(k, args.rate, args.duration, broker.port, Path(tmp), dash) for k in args.gateways]
        finally:
            dash.close()
            broker.stop()
    offered = "as fast as possible" if args.rate <= 0 else f"{args.rate:g} events/s per gateway"
    print(f"# {offered}, {CAMERAS_PER_GATEWAY} cameras per gateway, {args.duration:g} s, one mosquitto, "
          f"{mp.cpu_count()} cores")  # fmt: skip
    print("| gateways | events sent | received at the dashboard | events/s through the broker "
          "| latency p50 | p95 | p99 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['gateways']} | {r['sent']} | {r['received']} | {r['events_s']:.0f} | {r['p50_ms']:.1f} ms "
              f"| {r['p95_ms']:.1f} ms | {r['p99_ms']:.1f} ms |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
