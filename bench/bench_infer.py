"""POST /infer latency and throughput: p50/p99 and requests/s for a 640×480 JPEG with one face.

The service runs as users run it (`python -m service`, no cameras, no broker); the load generator
is another process on 127.0.0.1 with N concurrent clients.

    .venv/bin/python bench/bench_infer.py --concurrency 1 4 --duration 15
    .venv/bin/python bench/bench_infer.py --url http://127.0.0.1:8000   # an already running service
    .venv/bin/python bench/bench_infer.py --set api.detect_max_side=480 --set api.max_concurrency=2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench._common import percentile
from harness.images import demo_face_jpeg
from harness.machine import cpu_seconds
from harness.service import ServiceProcess
from harness.store import SEED_STORE


def load(url: str, jpeg: bytes, concurrency: int, duration: float, warmup: float, out: mp.Queue) -> None:
    """Runs in its own process: `concurrency` client threads, each with one keep-alive connection."""
    latencies: list[float] = []
    errors = 0
    cpu0 = time.process_time()
    lock = threading.Lock()
    start_at = time.monotonic() + warmup
    stop_at = start_at + duration

    def client() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=30) as http:
            while (now := time.monotonic()) < stop_at:
                t0 = time.perf_counter()
                resp = http.post("/infer", files={"file": ("face.jpg", jpeg, "image/jpeg")})
                dt = time.perf_counter() - t0
                ok = resp.status_code == 200 and len(resp.json()["faces"]) == 1
                if now >= start_at:
                    with lock:
                        latencies.append(dt)
                        errors += not ok

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, errors, time.process_time() - cpu0))


def _served(url: str) -> int:
    """Requests the service has answered, from its own /infer histogram."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('fer_infer_seconds_count{stage="total"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def start_service(workdir: Path, overrides: list[str]) -> ServiceProcess:
    config: dict[str, Any] = {
        "state_dir": str(workdir / "state"),
        "log_level": "WARNING",
        "api": {"max_concurrency": 4},
        "mqtt": {"enabled": False},
        "model": {"store": str(SEED_STORE), "watch_interval_s": 0},
    }
    for item in overrides:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node: dict[str, Any] = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return ServiceProcess.configured(workdir, config).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="benchmark a running service instead of starting one")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a dotted config override")
    args = ap.parse_args()
    jpeg = demo_face_jpeg()
    with tempfile.TemporaryDirectory() as tmp:
        svc = None if args.url else start_service(Path(tmp), args.set)
        url = svc.url if svc else args.url
        pid = svc.proc.pid if svc and svc.proc else None
        try:
            model = httpx.get(f"{url}/models").json()["served"]
            print(f"model {model['name']} v{model['version']} ({model['model_file']}); image 640x480 JPEG, "
                  f"{len(jpeg)} bytes, one face")  # fmt: skip
            # CPU per request, of the service and of the load generator: what the two cores must
            # supply for each request, whatever else shares them while this runs.
            print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} "
                  f"{'svc CPU ms/req':>14} {'client CPU ms/req':>17}")  # fmt: skip
            for c in args.concurrency:
                ctx = mp.get_context("spawn")
                q: mp.Queue = ctx.Queue()
                gen = ctx.Process(target=load, args=(url, jpeg, c, args.duration, args.warmup, q))
                svc0 = cpu_seconds(pid) if pid else float("nan")
                n0 = _served(url)
                gen.start()
                latencies, errors, client_cpu = q.get()
                gen.join()
                svc_cpu = (cpu_seconds(pid) if pid else float("nan")) - svc0
                served = max(1, _served(url) - n0)
                ms = [x * 1000 for x in latencies]
                print(f"{c:>7} {len(ms):>8} {errors:>6} {percentile(ms, 50):>8.2f} {percentile(ms, 99):>8.2f} "
                      f"{len(ms) / args.duration:>7.1f} {svc_cpu / served * 1000:>14.2f} "
                      f"{client_cpu / served * 1000:>17.2f}")  # fmt: skip
            stages: dict[str, dict[str, float]] = {}
            for line in httpx.get(f"{url}/metrics").text.splitlines():
                if line.startswith("fer_infer_seconds_sum") or line.startswith("fer_infer_seconds_count"):
                    name, value = line.rsplit(" ", 1)
                    stage = name.split('stage="')[1].split('"')[0]
                    stages.setdefault(stage, {})["sum" if "_sum" in name else "count"] = float(value)
            parts = ", ".join(
                f"{s} {v['sum'] / v['count'] * 1000:.2f}" for s, v in stages.items() if v.get("count")
            )  # fmt: skip
            print(f"server-side mean per stage (ms): {parts}")
        finally:
            if svc is not None:
                svc.stop()


if __name__ == "__main__":
    main()
