"""Which cameras are analysed: the privacy switch per camera, kept on disk so it survives a restart.

A camera switched OFF stays off across restarts until someone switches it ON again; the file is
the source of truth, and the retained ``…/analysis/state`` on the broker only echoes it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class AnalysisSwitches:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._off: set[str] = self._load()

    def _load(self) -> set[str]:
        try:
            data = json.loads(self.path.read_text())
            return {str(cam) for cam, state in data["cameras"].items() if state == "OFF"}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Failing open would analyse a camera someone switched off: refuse to guess.
            raise OSError(f"cannot read the analysis switches in {self.path}: {exc}") from exc

    def is_on(self, camera: str) -> bool:
        with self._lock:
            return camera not in self._off

    def set(self, camera: str, on: bool) -> None:
        with self._lock:
            (self._off.discard if on else self._off.add)(camera)
            body = {"schema_version": 1, "cameras": dict.fromkeys(sorted(self._off), "OFF")}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with tmp.open("w") as f:
                json.dump(body, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
