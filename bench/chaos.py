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
what it measured. The scenarios are in bench/chaos_scenarios/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.chaos_scenarios.broker import run_broker_kills
from bench.chaos_scenarios.crash import run_service_crashes
from bench.chaos_scenarios.fuzz import run_fuzz
from bench.chaos_scenarios.swaps import run_swaps


def _scenarios(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[str, bool]]:
    def header(what: str) -> None:
        print(f"\n== {what} (machine: {os.cpu_count()} cores, shared)", flush=True)

    if args.cmd in ("fuzz", "all"):
        header("fuzz")
        f = run_fuzz(workdir / "fuzz", requests=args.requests, stalled=args.stalled, seed=args.seed)
        print(f"{f.requests} requests in {f.seconds:.0f} s; statuses {dict(sorted(f.statuses.items(), key=str))}")
        print(f"kinds {dict(sorted(f.kinds.items()))}")
        print(f"raw-socket requests: {dict(f.raw_statuses)}; slow bodies answered 200: {f.slow_ok}/{f.slow_total}")
        print(f"5xx: {f.server_errors}; transport errors on fuzzed requests: {f.transport_errors}; resets on "
              f"{f.follow_ups} well-formed follow-ups: {f.follow_up_resets}")  # fmt: skip
        print(f"/healthz: {f.health_checks} checks, {f.health_failures} failed, slowest {f.health_max_s * 1000:.0f} ms")
        print(f"stalled connections closed by the server: {f.stalled_closed}/{f.stalled}")
        print(f"the 67-byte PNG whose IDAT claims 1.7 GB, from every client at once: {dict(f.lying_statuses)}")
        print(f"RSS: idle {f.idle_rss_mb:.0f} MB, peak {f.peak_rss_mb:.0f} MB (limit {args.max_rss_mb:.0f})")
        yield "fuzz", f.ok(args.max_rss_mb)
    if args.cmd in ("broker", "all"):
        for qos in args.qos:
            header(f"broker kills, events at QoS {qos}")
            r = run_broker_kills(workdir / f"broker-qos{qos}", kills=args.kills, qos=qos, seed=args.seed)
            print(r.line())
            yield f"broker qos {qos}", r.lost == 0 and r.order_violations == 0 and r.intact
    if args.cmd in ("crash", "all"):
        header("service crashes")
        r = run_service_crashes(workdir / "crash", kills=args.crashes, seed=args.seed)
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
        s.add_argument("--seed", type=int, default=0, help="draws the fuzz cases and the kills' timing")
        s.add_argument("--keep", action="store_true", help="keep the work directory (logs, outboxes)")
    args = p.parse_args(argv)
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
