"""The service, two ways: `ServiceProcess` runs `python -m service --config FILE` as users run it, in a
process of its own that a test or bench can SIGTERM, SIGKILL and restart; `live_server` serves an app a
test built in a thread of the test process, on a real socket."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from harness.machine import free_port, memory_kb, terminate, wait_until

ROOT = Path(__file__).resolve().parents[1]


class ServiceProcess:
    """``python -m service --config config`` serving on 127.0.0.1:``port``, stdout and stderr appended to
    ``log``. No FER_* variable of the caller reaches it, only those in ``env``."""

    def __init__(self, config: Path, port: int, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")} | dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def configured(cls, workdir: Path, config: dict[str, Any], log: str = "service.log") -> ServiceProcess:
        """``config`` written to workdir/config.yaml, the API on 127.0.0.1 and on a free port unless it names one."""
        workdir.mkdir(parents=True, exist_ok=True)
        api = {"host": "127.0.0.1", "port": free_port(), **config.get("api", {})}
        path = workdir / "config.yaml"
        path.write_text(json.dumps({**config, "api": api}))  # JSON is YAML
        return cls(path, api["port"], workdir / log)

    def launch(self) -> ServiceProcess:
        """Start the process without waiting for it: several then come up side by side."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "service", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=self._env, cwd=ROOT)  # fmt: skip
        return self

    def wait_ready(self, timeout: float = 120) -> ServiceProcess:
        """Until /readyz answers 200; RuntimeError with the log's end if it exits or is not ready in time."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with (contextlib.suppress(OSError, http.client.HTTPException),
                  urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp):
                if resp.status == 200:
                    return self
            time.sleep(0.1)
        # One that never got ready must not outlive the test or bench that started it.
        self.kill()
        raise RuntimeError(f"service not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def start(self, timeout: float = 120) -> ServiceProcess:
        return self.launch().wait_ready(timeout)

    def get(self, path: str) -> Any:
        """The JSON body of GET ``path``, whatever the status."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as err:
            return json.load(err)

    def memory_kb(self, key: str) -> int:
        """VmRSS (now) or VmHWM (peak) of the service, in kB."""
        assert self.proc is not None
        return memory_kb(self.proc.pid, key)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd and Docker stop it, then SIGKILL after ``timeout``; the exit status."""
        return 0 if self.proc is None else terminate(self.proc, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def live_server(app: Any, config: Callable[[int], uvicorn.Config] | None = None) -> Iterator[str]:
    """A real uvicorn on a free port, in a thread; yields the base URL. ``config(port)`` builds its
    configuration (default: plain uvicorn on 127.0.0.1)."""
    port = free_port()
    cfg = config(port) if config else uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                     lifespan="on")  # fmt: skip
    server = uvicorn.Server(cfg)
    # As the entry point does: open dashboard streams end when the server is asked to exit.
    app.state.exiting = lambda: server.should_exit
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 60, what="uvicorn start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
