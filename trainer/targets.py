"""Teacher predictions computed once per view, so a big teacher costs the student nothing per epoch.

Running an ensemble of dense teachers on every student batch costs more than the student's own
training. Instead each face gets ``teacher_views`` seeded augmented views; the teacher scores every
view once, and each epoch the student trains on one view per face, drawn at random, with the
teacher's prediction for exactly that view. This is the approach of FKD (Shen & Xing, ECCV 2022) and
ReLabel (Yun et al., CVPR 2021): the student still learns on the view its teacher saw.

The cache holds the teacher's output before the temperature (log-probabilities for published
members), in float32: the soft labels made from it are the ones a live teacher would give.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from trainer.config import AugmentConfig
from trainer.data import Split
from trainer.views import ViewParams, apply, fixed_views

# What scores a batch of float faces (N, 1, S, S) 0..255: a teacher, or an ensemble of them.
Scorer = Callable[[torch.Tensor], torch.Tensor]


def views_seed(seed: int) -> int:
    """The views belong to the stage's seed, apart from the seeds of its shuffling and augmentation."""
    return seed * 1000 + 999


class TargetCache:
    """``views`` (V, N) of a split's faces and ``outputs`` (V, N, C): the teacher's output on each."""

    def __init__(self, views: ViewParams, outputs: torch.Tensor) -> None:
        self.views = views
        self.outputs = outputs

    @property
    def count(self) -> int:
        return int(self.outputs.shape[0])

    def batch(self, x: torch.Tensor, idx: torch.Tensor, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """View ``which[i]`` of face ``idx[i]`` (``x`` holds the batch's faces) and the teacher's output on it."""
        which, idx = which.cpu(), idx.cpu()
        return apply(x, self.views[which, idx].to(x.device)), self.outputs[which, idx].to(x.device)


def _fingerprint(train: Split, teacher: list[str], count: int, seed: int, aug: AugmentConfig) -> str:
    h = hashlib.sha256(json.dumps({"teacher": teacher, "views": count, "seed": seed, "augment": aug.model_dump()},
                                  sort_keys=True).encode())
    h.update(np.ascontiguousarray(train.x).tobytes())
    h.update(np.ascontiguousarray(train.y).tobytes())
    return h.hexdigest()


@torch.no_grad()
def score_views(scorer: Scorer, train: Split, views: ViewParams, batch: int = 512) -> torch.Tensor:
    """The scorer's output on every view of every face, (V, N, C)."""
    x_all = torch.from_numpy(train.x)[:, None]
    count, n = views.flip.shape
    out: list[torch.Tensor] = []
    bar = tqdm(total=count * n, desc="teacher on fixed views", unit="face", unit_scale=True, dynamic_ncols=True)
    for v in range(count):
        per_view = []
        for i in range(0, n, batch):
            idx = torch.arange(i, min(i + batch, n))
            per_view.append(scorer(apply(x_all[idx].float(), views[v, idx])).float().cpu())
            bar.update(len(idx))
        out.append(torch.cat(per_view))
    bar.close()
    return torch.stack(out)


def load_or_build(path: Path, scorer: Scorer, teacher: list[str], train: Split, count: int, seed: int,
                  aug: AugmentConfig) -> TargetCache:
    """The cache at ``path`` when it was made for this teacher, these faces and these views; else made anew.

    ``teacher`` names the scorer (published versions as ``name:version``), so a cache is never reused for
    another teacher.
    """
    key = _fingerprint(train, teacher, count, seed, aug)
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            return TargetCache(ViewParams(**saved["views"]), saved["outputs"])
        tqdm.write(f"{path.name}: made for another teacher, views or data; scoring again")
    views = fixed_views(len(train), train.x.shape[-1], count, views_seed(seed), aug)
    cache = TargetCache(views, score_views(scorer, train, views))
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"key": key, "teacher": teacher, "views": views.as_dict(), "outputs": cache.outputs}, tmp)
    os.replace(tmp, path)
    return cache
