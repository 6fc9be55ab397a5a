"""Event noise of the demo camera: expression events and tracks per minute, with the re-entry
window off (every re-detection of the face is an event, as before) and at the given windows.

The demo clip's face leaves and comes back; each run plays it through the real pipeline (OpenCV,
the Haar detector, onnxruntime, tracker, rules) for --duration seconds, with no broker.

    .venv/bin/python bench/bench_event_noise.py --duration 120 --windows 0 10
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from bench._common import ROOT
from service.comms.base import MemoryPublisher
from service.config import Settings
from service.runtime import Runtime


def run(window_s: float, duration_s: float, state_dir: Path) -> tuple[int, int, list[str | None]]:
    """(expression events, tracks started, their previous_label values)."""
    settings = Settings.model_validate({
        "state_dir": str(state_dir),
        "mqtt": {"enabled": False},
        "model": {"store": str(ROOT / "model_store" / "seed"), "watch_interval_s": 0},
        "tracking": {"reentry_window_s": window_s},
        "cameras": [{"id": "demo", "source": "demo", "loop": True, "fps": 15}],
    })  # fmt: skip
    runtime = Runtime(settings)
    runtime.start()
    try:
        time.sleep(duration_s)
    finally:
        runtime.stop()
    assert isinstance(runtime.publisher, MemoryPublisher)
    changes = [e for e in runtime.publisher.events if e.event_type == "expression_change"]
    tracks = runtime.cameras.pipelines[0].tracker._next_id - 1
    return len(changes), tracks, [getattr(e, "previous_label", None) for e in changes]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=120.0)
    p.add_argument("--windows", type=float, nargs="+", default=[0.0, 10.0])
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"demo camera at 15 fps for {args.duration:.0f} s per run")
    print("reentry_window_s | expression events | events/min | tracks started | previous_label null")
    with tempfile.TemporaryDirectory() as tmp:
        for window in args.windows:
            n, tracks, previous = run(window, args.duration, Path(tmp))
            nulls = sum(1 for x in previous if x is None)
            print(f"{window:16.0f} | {n:17d} | {n * 60 / args.duration:10.1f} | {tracks:16d} | {nulls}")


if __name__ == "__main__":
    main()
