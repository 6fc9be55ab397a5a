"""Shutdown: cameras are stopped together, and a worker that is still running is not raced."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.machine import free_port
from service.comms.outbox import Outbox
from service.config import Settings
from service.runtime import Runtime


def test_cameras_stop_together_and_a_stuck_worker_is_left_alone(
    tmp_path: Path, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    cams = [{"id": f"c{i}", "source": str(tmp_path / "no-such-clip.avi")} for i in range(3)]
    settings = make_settings(mqtt={"enabled": True, "port": free_port()}, cameras=cams)
    Outbox(settings.outbox_path, 100).close()
    # Another process holding the outbox's write lock (an operator's sqlite3 shell, a backup): each
    # camera's first event, the camera_fault of its missing source, waits in SQLite's busy timeout.
    other = sqlite3.connect(settings.outbox_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    runtime = Runtime(settings)
    runtime.start()
    try:
        time.sleep(1.0)
        with caplog.at_level(logging.ERROR):
            for p in runtime.cameras.pipelines:
                p.request_stop()
            started = time.monotonic()
            deadline = started + 2.0
            for p in runtime.cameras.pipelines:
                p.join(deadline)
            elapsed = time.monotonic() - started
        # One deadline for all: one at a time, three stuck workers would take three timeouts.
        assert elapsed < 3.5
        stuck = [r for r in caplog.records if "worker still running" in r.getMessage()]
        assert len(stuck) == 3
        other.execute("ROLLBACK")
        for p in runtime.cameras.pipelines:
            for t in p._threads:
                t.join(20)
                assert not t.is_alive()
        with contextlib.closing(sqlite3.connect(settings.outbox_path)) as db:
            events = [json.loads(row[0]) for row in db.execute("SELECT payload FROM outbox ORDER BY id")]
        # Only the workers' own `new`: nothing closed the rule engines from the stopping thread.
        assert sorted((e["camera"], e["event_type"], e["type"]) for e in events) == [
            (f"c{i}", "camera_fault", "new") for i in range(3)
        ]
    finally:
        with contextlib.suppress(sqlite3.OperationalError):
            other.execute("ROLLBACK")
        other.close()
        runtime.stop()
