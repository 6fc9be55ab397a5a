"""Augmented views of 48×48 faces, drawn as parameters first so that a view can be made again.

``augment`` draws a fresh view of every face in a batch. ``draw`` and ``apply`` split that in two, so
a fixed set of views per face can be kept as parameters (a few floats a view) and rebuilt bit for bit
later: what lets a teacher score each view once, and a student train on the very view that was scored
(``trainer/targets.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from trainer.config import AugmentConfig


@dataclass(frozen=True)
class ViewParams:
    """One view per face, any leading shape: (N,) for a batch, (V, N) for V views of a split."""

    flip: torch.Tensor  # bool
    angle: torch.Tensor  # radians
    scale: torch.Tensor
    shift_x: torch.Tensor  # in affine_grid units: a side spans 2
    shift_y: torch.Tensor
    contrast: torch.Tensor
    brightness: torch.Tensor  # grey levels
    erase_top: torch.Tensor  # pixels (long)
    erase_left: torch.Tensor
    erase_h: torch.Tensor
    erase_w: torch.Tensor
    erase: torch.Tensor  # bool: whether the rectangle is erased at all

    def __getitem__(self, index: object) -> ViewParams:
        return ViewParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def stack(views: list[ViewParams]) -> ViewParams:
        return ViewParams(**{f.name: torch.stack([getattr(v, f.name) for v in views]) for f in fields(ViewParams)})

    def to(self, device: torch.device) -> ViewParams:
        return ViewParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def draw(n: int, side: int, gen: torch.Generator, aug: AugmentConfig) -> ViewParams:
    """One random view for each of ``n`` faces of ``side`` pixels, from ``gen`` alone."""
    dev = gen.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, device=dev)

    flip = rand(n) < 0.5
    angle = (rand(n) - 0.5) * math.radians(2 * aug.rotate_deg)
    scale = 1.0 + (rand(n) - 0.5) * 2 * aug.scale
    shift = (rand(n, 2) - 0.5) * 4 * aug.shift
    contrast = 1.0 + (rand(n) - 0.5) * 2 * aug.contrast
    brightness = (rand(n) - 0.5) * 2 * aug.brightness
    # One erased rectangle of 9-25% of the face: robustness to hands, glasses, masks.
    h = (side * (0.3 + rand(n) * 0.2)).long()
    w = (side * (0.3 + rand(n) * 0.2)).long()
    top = (rand(n) * (side - h)).long()
    left = (rand(n) * (side - w)).long()
    erase = rand(n) < aug.erase_p
    return ViewParams(flip, angle, scale, shift[:, 0], shift[:, 1], contrast, brightness, top, left, h, w, erase)


def apply(x: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """The views ``p`` of faces ``x`` (N, 1, S, S), float 0..255: flip, affine, brightness/contrast, erasing."""
    x = torch.where(p.flip[:, None, None, None], x.flip(3), x)
    cos, sin = torch.cos(p.angle) / p.scale, torch.sin(p.angle) / p.scale
    theta = torch.stack([torch.stack([cos, -sin, p.shift_x], 1), torch.stack([sin, cos, p.shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * p.contrast[:, None, None, None] + mean + p.brightness[:, None, None, None]
    idx = torch.arange(x.shape[-1], device=x.device)
    rows = (idx[None] >= p.erase_top[:, None]) & (idx[None] < (p.erase_top + p.erase_h)[:, None])
    cols = (idx[None] >= p.erase_left[:, None]) & (idx[None] < (p.erase_left + p.erase_w)[:, None])
    erase = (rows[:, :, None] & cols[:, None, :]) & p.erase[:, None, None]
    x = x.masked_fill(erase[:, None], 0.0) + erase[:, None] * mean
    return x.clamp_(0, 255)


def augment(x: torch.Tensor, gen: torch.Generator, aug: AugmentConfig) -> torch.Tensor:
    """A fresh random view of every face in the batch ``x`` (N, 1, S, S)."""
    return apply(x, draw(x.shape[0], x.shape[-1], gen, aug))


def fixed_views(n: int, side: int, count: int, seed: int, aug: AugmentConfig) -> ViewParams:
    """``count`` views of each of ``n`` faces, (count, n), the same for every run with this seed."""
    gen = torch.Generator().manual_seed(seed)
    return ViewParams.stack([draw(n, side, gen, aug) for _ in range(count)])
