"""A bounded, ordered, on-disk queue of events waiting for the broker.

paho keeps in-flight QoS 1 messages in memory only; this keeps them across broker outages and
service restarts. Every event goes through it: a row is deleted only once the broker acknowledged
it, so delivery is at least once and in insertion order. When full, the oldest rows are dropped
and counted, because the newest events say the most about the present.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from service.metrics import Metrics

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    camera TEXT NOT NULL,
    payload BLOB NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    topic: str
    camera: str
    payload: bytes


class Outbox:
    def __init__(self, path: Path, max_messages: int, metrics: Metrics | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_messages = max_messages
        self.metrics = metrics
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        # WAL + NORMAL survives a crash of the process (what restarts are about) at a fraction of
        # the cost of a full fsync per event.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        self.dropped = 0
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.events_queued.set(self._count)

    def __len__(self) -> int:
        return self._count

    def put(self, topic: str, camera: str, payload: bytes) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO outbox (topic, camera, payload) VALUES (?, ?, ?)", (topic, camera, payload)
                )
                self._count += 1
                excess = self._count - self.max_messages
                if excess > 0:
                    self._db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,)
                    )
                    self._count -= excess
                    self.dropped += excess
                    if self.metrics is not None:
                        self.metrics.events_dropped.inc(excess)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
                raise
            finally:
                self._gauge()

    def peek(self, limit: int) -> list[OutboxRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, camera, payload FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxRow(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]

    def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock:
            marks = ",".join("?" * len(ids))
            cur = self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
            self._count -= cur.rowcount
            self._gauge()

    def close(self) -> None:
        with self._lock:
            self._db.close()
