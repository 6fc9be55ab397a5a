"""This machine as the tests and benchmarks see it: free loopback ports, waiting for a condition or a
listener, and what /proc says of a process they started."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    """The predicate's first truthy value; AssertionError after ``timeout`` seconds, so a test fails."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_listening(process: subprocess.Popen[Any], ports: list[int], name: str, log: Path, timeout: float = 10) -> None:
    """Until ``process`` accepts connections on every port on 127.0.0.1; RuntimeError with its log when it
    exits first or does not listen in time."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if process.poll() is not None:
                tail = log.read_text()[-3000:] if log.exists() else ""
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                tail = log.read_text()[-3000:] if log.exists() else ""
                raise RuntimeError(f"{name} is not listening on {port} after {timeout} s:\n{tail}")
            time.sleep(0.02)


def terminate(process: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM, as systemd and Docker stop a process, then SIGKILL after ``timeout``; the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int, key: str) -> int:
    """A memory figure from /proc/PID/status in kB: VmRSS now, VmHWM the peak so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0
