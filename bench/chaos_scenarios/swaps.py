"""Swaps: promote and roll back the served model again and again while clients send /infer, then try to
promote each version that must never be served (harness.faults.FAULTS) over HTTP and with the CLI. No
request may fail or get another version's labels, every bad version must be refused with the alias left
where it was, and the service must restart afterwards, even on an alias left on a bad version."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._common import ROOT
from harness.faults import FAULTS
from harness.images import demo_face_jpeg
from harness.service import ServiceProcess
from harness.store import copy_store, publish_copy
from model_store import ModelStore


@dataclass
class SwapReport:
    cycles: int = 0
    requests: int = 0
    failed: int = 0
    foreign_versions: int = 0
    label_mismatches: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # fault -> how it was refused, or what went wrong
    restart_ok: bool = False
    fallback_ok: bool = False
    seconds: float = 0.0

    def ok(self) -> bool:
        refused_all = all(v.startswith("refused") for v in self.refused.values())
        return (self.failed == 0 and self.foreign_versions == 0 and self.label_mismatches == 0 and refused_all
                and self.restart_ok and self.fallback_ok)  # fmt: skip


def run_swaps(workdir: Path, *, cycles: int = 100, clients: int = 4) -> SwapReport:
    root = copy_store(workdir / "store")
    store = ModelStore(root)
    v1 = store.resolve("ean", "stable")
    labels1 = store.manifest("ean", v1).labels
    v2 = publish_copy(store, labels=list(reversed(labels1)))
    labels = {v1: labels1, v2: list(reversed(labels1))}
    token = {"Authorization": "Bearer chaos"}
    config = {"state_dir": str(workdir / "state"), "log_level": "WARNING", "mqtt": {"enabled": False},
              "model": {"store": str(root), "watch_interval_s": 0.5}, "api": {"token": "chaos"}}  # fmt: skip
    svc = ServiceProcess.configured(workdir, config).start()
    rep = SwapReport()
    started = time.monotonic()
    stop = threading.Event()
    lock = threading.Lock()
    jpeg = demo_face_jpeg()

    def hammer() -> None:
        with httpx.Client(base_url=svc.url, timeout=30) as http:
            while not stop.is_set():
                try:
                    resp = http.post("/infer", content=jpeg, headers={"Content-Type": "image/jpeg"})
                    body = resp.json() if resp.status_code == 200 else None
                except (httpx.TransportError, ValueError):
                    resp, body = None, None
                with lock:
                    rep.requests += 1
                    if body is None:
                        rep.failed += 1
                        continue
                    version = body["model_version"]
                    if version not in labels:
                        rep.foreign_versions += 1
                    elif body["faces"] and list(body["faces"][0]["scores"]) != labels[version]:
                        rep.label_mismatches += 1

    threads = [threading.Thread(target=hammer) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=svc.url, timeout=60, headers=token) as admin:
            for _ in range(cycles):
                a = admin.post("/models/promote", json={"version": v2})
                b = admin.post("/models/rollback", json={"alias": "stable"})
                rep.cycles += a.status_code == 200 and b.status_code == 200
            for name, make in FAULTS.items():
                before = store.aliases("ean")
                bad = make(store)
                http_resp = admin.post("/models/promote", json={"version": bad})
                cli = subprocess.run([sys.executable, "-m", "model_store", "--root", str(root), "promote", "ean",
                                      str(bad)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
                after = store.aliases("ean")
                served = admin.get("/models").json()["served"]["version"]
                if http_resp.status_code == 422 and cli.returncode != 0 and after == before and served == v1:
                    rep.refused[name] = f"refused ({http_resp.json()['error']['code']}, CLI exit {cli.returncode})"
                else:
                    rep.refused[name] = f"NOT refused: HTTP {http_resp.status_code}, CLI {cli.returncode}, {after}"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    svc.stop()
    rep.restart_ok = _restarts(svc, v1)
    # As an old CLI or a hand edit would leave it: the alias on a bad version. It still starts.
    store.set_alias("ean", "stable", max(store.versions("ean")))
    rep.fallback_ok = _restarts(svc, v1, fallback=True)
    rep.seconds = time.monotonic() - started
    return rep


def _restarts(svc: ServiceProcess, expect: int, fallback: bool = False) -> bool:
    try:
        svc.start()
    except RuntimeError:
        return False
    try:
        served = httpx.get(f"{svc.url}/models").json()["served"]["version"]
        metrics = httpx.get(f"{svc.url}/metrics").text
        return served == expect and (not fallback or 'fer_model_reloads_total{result="fallback"} 1.0' in metrics)
    finally:
        svc.stop()

