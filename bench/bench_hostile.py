"""The second security review's costly bodies against `python -m service`, each sent 4 at once:
how fast each is answered, with what, and how far the series takes the service's peak memory.

    .venv/bin/python bench/bench_hostile.py
    .venv/bin/python bench/bench_hostile.py --rounds 3   # the series three times over

The issue's bar: every answer a 4xx within 5 s, and the peak (VmHWM) at most 200 MB above where the
series found it. Before the budgets, the 400-scan JPEG took 10.4 s of CPU, four wide progressive
JPEGs took the peak to 1,105 MB, and the JSON and multipart floods to 715 and 749 MB.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from harness.hostile import json_flood, many_scans_jpeg, multipart_flood, wide_progressive_jpeg
from harness.service import ServiceProcess
from harness.store import SEED_STORE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    flood, flood_type = multipart_flood()
    cases = [
        ("400-scan progressive JPEG", many_scans_jpeg(), "image/jpeg"),
        ("16384x2441 progressive JPEG", wide_progressive_jpeg(), "image/jpeg"),
        ("10 MB of JSON `[],`", json_flood(), "application/json"),
        ("200k-part multipart", flood, flood_type),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        svc = ServiceProcess.configured(workdir, {
            "state_dir": str(workdir / "state"), "log_level": "WARNING", "mqtt": {"enabled": False},
            "model": {"store": str(SEED_STORE), "watch_interval_s": 0},
        }).start()  # fmt: skip
        try:
            start_mb = svc.memory_kb("VmHWM") / 1024
            print(f"service ready: peak {start_mb:.0f} MB")
            print(f"{'body':30} {'size':>9} {'answers (4 at once)':34} {'slowest':>8} {'peak':>8}")
            ok = True
            for _ in range(args.rounds):
                for what, body, ctype in cases:

                    def one(_: int, body: bytes = body, ctype: str = ctype) -> tuple[str, float]:
                        t0 = time.monotonic()
                        r = httpx.post(f"{svc.url}/infer", content=body, headers={"Content-Type": ctype}, timeout=600)
                        code = r.json().get("error", {}).get("code", "ok") if r.status_code != 200 else "ok"
                        return f"{r.status_code} {code}", time.monotonic() - t0

                    with ThreadPoolExecutor(4) as pool:
                        answers = list(pool.map(one, range(4)))
                    slowest = max(t for _, t in answers)
                    peak = svc.memory_kb("VmHWM") / 1024
                    kinds = sorted({a for a, _ in answers})
                    ok &= slowest < 5 and all(400 <= int(a.split()[0]) < 500 for a in kinds)
                    print(f"{what:30} {len(body) / 1e6:7.2f} MB {', '.join(kinds):34} {slowest:6.2f} s {peak:6.0f} MB")
            growth = svc.memory_kb("VmHWM") / 1024 - start_mb
            print(f"peak grew by {growth:.0f} MB over the series (bar: < 200 MB)")
            ok &= growth < 200
        finally:
            svc.stop()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
