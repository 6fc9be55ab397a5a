"""`python -m model_store serve` holds a bounded number of connections: the review kept 202 threads
alive with 200 connections trickling header lines. Past the cap a connection is closed at once, and
the server answers again as soon as the others leave."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.machine import free_port, wait_until
from harness.service import ROOT
from harness.store import SEED_STORE
from model_store.distribution import MAX_CONNECTIONS


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_connections_past_the_cap_are_closed_and_the_server_recovers(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "model_store", "--root", str(SEED_STORE), "serve", "--port",
                             str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/models"
    socks: list[socket.socket] = []
    try:
        wait_until(lambda: _answers(url), 60, interval=0.2, what="the store server")
        baseline = _threads(proc.pid)
        for _ in range(MAX_CONNECTIONS + 40):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and the rest never comes
            socks.append(s)
        wait_until(lambda: _closed(socks) >= 40, 30, interval=0.2, what="the connections past the cap closed")
        assert _threads(proc.pid) <= baseline + MAX_CONNECTIONS
        assert _closed(socks) == 40
    finally:
        for s in socks:
            s.close()
    try:
        # Once they leave, their slots are free again.
        wait_until(lambda: _answers(url), 30, interval=0.2, what="an answer after the trickle")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


def _closed(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed (EOF or reset), without waiting on the others."""
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
        time.sleep(0)
    return closed
