"""Shared by the benchmark scripts: where the repository is, and percentiles of what they measured.
What they start and feed (the service, a broker, cameras, frames with a face) is in harness/."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")
