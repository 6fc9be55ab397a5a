"""The chaos bench must be able to fail: events a capped outbox dropped while the broker was down
are counted as lost, from the outbox's own count of what was produced."""

from __future__ import annotations

from pathlib import Path

from bench.chaos_scenarios.crash import run_capped_outbox
from tests.service.conftest import needs_broker


@needs_broker
def test_a_capped_outbox_with_the_broker_down_is_counted_as_lost(tmp_path: Path) -> None:
    r = run_capped_outbox(tmp_path, events=30, max_messages=10)
    assert (r.produced, r.unique, r.lost) == (30, 10, 20), r.line()
    assert r.order_violations == 0
