"""Iterative teacher-student training: round 0 on hard labels, then rounds of distillation.

Each round's student starts from its teacher's weights (transfer) and learns from soft labels
that are refined round after round by averaging the new teacher's with the previous ones.
"""

from __future__ import annotations

import copy
import math
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trainer.config import AugmentConfig, EANConfig, RoundConfig, TrainConfig
from trainer.data import Split
from trainer.distill import kd_loss, soft_labels
from trainer.model import EAN


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU")
    return torch.device(name)


def augment(x: torch.Tensor, gen: torch.Generator, aug: AugmentConfig) -> torch.Tensor:
    """Batched augmentation for 48×48 faces: flip, small affine, brightness/contrast, erasing."""
    n, dev = x.shape[0], x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, device=dev)

    flip = rand(n) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    angle = (rand(n) - 0.5) * math.radians(2 * aug.rotate_deg)
    scale = 1.0 + (rand(n) - 0.5) * 2 * aug.scale
    shift = (rand(n, 2) - 0.5) * 4 * aug.shift  # affine_grid spans [-1, 1]: a side is 2 units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1.0 + (rand(n, 1, 1, 1) - 0.5) * 2 * aug.contrast
    brightness = (rand(n, 1, 1, 1) - 0.5) * 2 * aug.brightness
    x = (x - mean) * contrast + mean + brightness
    # Random erasing of one rectangle (9-25% of the face): robustness to hands, glasses, masks.
    side = x.shape[-1]
    h = (side * (0.3 + rand(n) * 0.2)).long()
    w = (side * (0.3 + rand(n) * 0.2)).long()
    top = (rand(n) * (side - h)).long()
    left = (rand(n) * (side - w)).long()
    idx = torch.arange(side, device=dev)
    rows = (idx[None] >= top[:, None]) & (idx[None] < (top + h)[:, None])
    cols = (idx[None] >= left[:, None]) & (idx[None] < (left + w)[:, None])
    erase = (rows[:, :, None] & cols[:, None, :]) & (rand(n) < aug.erase_p)[:, None, None]
    x = x.masked_fill(erase[:, None], 0.0) + erase[:, None] * mean
    return x.clamp_(0, 255)


@torch.no_grad()
def _logits(model: nn.Module, x: np.ndarray, device: torch.device, flip: bool = False) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(x), 512):
        xb = torch.from_numpy(x[i : i + 512]).to(device)[:, None].float()
        out.append(model(xb.flip(3) if flip else xb).float().cpu())
    return torch.cat(out)


def predict_logits(model: nn.Module, x: np.ndarray, device: torch.device, tta: bool) -> torch.Tensor:
    """Logits for uint8 faces (N, S, S); with ``tta`` the mean of the face's and its mirror's."""
    logits = _logits(model, x, device)
    return (logits + _logits(model, x, device, flip=True)) / 2 if tta else logits


@dataclass
class Evaluation:
    accuracy: float
    accuracy_tta: float  # equals accuracy when flip TTA was not asked for


def evaluate(model: nn.Module, split: Split, device: torch.device, tta: bool) -> Evaluation:
    """Val accuracy, and with ``tta`` also with the mirror's logits averaged in."""
    y = torch.from_numpy(split.y)
    logits = _logits(model, split.x, device)
    plain = float((logits.argmax(1) == y).float().mean())
    if not tta:
        return Evaluation(plain, plain)
    both = logits + _logits(model, split.x, device, flip=True)
    return Evaluation(plain, float((both.argmax(1) == y).float().mean()))


@dataclass
class RoundResult:
    round: int
    kind: str  # "ce", "kd" or "control"
    model: nn.Module
    epochs: int
    history: list[dict] = field(default_factory=list)  # per epoch: loss, val accuracy
    evaluation: Evaluation | None = None
    wall_time_s: float = 0.0

    def score(self, tta: bool) -> float:
        assert self.evaluation is not None
        return self.evaluation.accuracy_tta if tta else self.evaluation.accuracy


def train_round(
    model: nn.Module,
    train: Split,
    val: Split,
    rc: RoundConfig,
    cfg: TrainConfig,
    device: torch.device,
    soft: torch.Tensor | None,
    desc: str,
) -> list[dict]:
    round_seed = cfg.seed * 1000 + zlib.crc32(desc.encode()) % 1000
    gen = torch.Generator(device=device).manual_seed(round_seed)
    cpu_gen = torch.Generator().manual_seed(round_seed)
    x_all = torch.from_numpy(train.x)[:, None]
    y_all = torch.from_numpy(train.y)
    steps = math.ceil(len(train) / cfg.batch_size)
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=rc.lr,
        momentum=0.9,
        nesterov=True,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=rc.lr, total_steps=rc.epochs * steps, pct_start=0.15)
    history = []
    bar = tqdm(range(rc.epochs), desc=desc, unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=cpu_gen)
        total, seen = 0.0, 0
        for i in range(steps):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb = augment(x_all[idx].to(device, non_blocking=True).float(), gen, cfg.augment)
            if device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y_all[idx].to(device)
            sb = soft[idx].to(device) if soft is not None else None
            loss = kd_loss(model(xb), sb, yb, cfg.temperature, cfg.alpha, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        last = epoch == rc.epochs - 1
        # Plain val accuracy every epoch for the learning curve; the flip-TTA figure once, at the end.
        ev = evaluate(model, val, device, tta=cfg.tta and last)
        history.append({"epoch": epoch + 1, "train_loss": total / seen, "val_accuracy": ev.accuracy})
        bar.set_postfix(loss=f"{total / seen:.3f}", val=f"{ev.accuracy:.4f}")
    return history


def _new_model(arch: EANConfig, device: torch.device) -> EAN:
    model = EAN(arch).to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


def _teacher_soft_labels(teacher: nn.Module, train: Split, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    return soft_labels(predict_logits(teacher, train.x, device, tta=True), cfg.temperature)


def save_checkpoint(path: Path, model: EAN) -> None:
    """nanoGPT style: the architecture travels with the weights."""
    torch.save({"arch": model.cfg.model_dump(), "state_dict": model.state_dict()}, path)


def load_checkpoint(path: Path, device: torch.device) -> EAN:
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = _new_model(EANConfig.model_validate(ckpt["arch"]), device)
    model.load_state_dict(ckpt["state_dict"])
    return model


def fit(
    train: Split,
    val: Split,
    cfg: TrainConfig,
    control: bool = False,
    out: Path | None = None,
    round0: Path | None = None,
) -> list[RoundResult]:
    """Round 0 plus ``cfg.rounds`` T-S rounds. ``control`` trains the same rounds on CE alone.

    ``out`` receives a checkpoint per round; ``round0`` reuses a saved round-0 checkpoint, so a
    control run continues from exactly the model the T-S rounds started from.
    """
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    results: list[RoundResult] = []

    def run(kind: str, rnd: int, model: EAN, rc: RoundConfig, soft: torch.Tensor | None, desc: str) -> RoundResult:
        t0 = time.perf_counter()
        history = train_round(model, train, val, rc, cfg, device, soft, desc)
        ev = evaluate(model, val, device, tta=cfg.tta)
        result = RoundResult(rnd, kind, model, rc.epochs, history, ev, time.perf_counter() - t0)
        tqdm.write(f"{desc}: val {ev.accuracy:.4f}, with flip TTA {ev.accuracy_tta:.4f}")
        if out is not None:
            wide = model.cfg.width_mult != cfg.student.width_mult
            save_checkpoint(out / f"round{rnd}{'-teacher' if wide else ''}.pt", model)
        return result

    if round0 is not None:
        student = load_checkpoint(round0, device)
        ev = evaluate(student, val, device, tta=cfg.tta)
        results.append(RoundResult(0, "ce", student, 0, [], ev, 0.0))
    else:
        student = _new_model(cfg.student, device)
        results.append(run("ce", 0, student, cfg.round0, None, "round 0 (CE)"))
    teacher = student
    if cfg.teacher_width_mult != 1.0 and not control:
        wide = cfg.student.model_copy(update={"width_mult": cfg.teacher_width_mult})
        wide_model = _new_model(wide, device)
        t = run("ce", 0, wide_model, cfg.round0, None, f"round 0 teacher (x{cfg.teacher_width_mult:g})")
        tqdm.write(f"wide teacher val {t.score(cfg.tta):.4f}")
        teacher = wide_model
    soft: torch.Tensor | None = None
    for rnd in range(1, cfg.rounds + 1):
        if not control:
            new = _teacher_soft_labels(teacher, train, device, cfg)
            soft = new if soft is None else cfg.soft_label_momentum * soft + (1 - cfg.soft_label_momentum) * new
            if cfg.ferplus_weight > 0 and train.votes is not None:
                has = torch.from_numpy(train.votes.sum(1) > 0)[:, None]
                mixed = (1 - cfg.ferplus_weight) * soft + cfg.ferplus_weight * torch.from_numpy(train.votes)
                soft = torch.where(has, mixed, soft)
        student = copy.deepcopy(results[-1].model)  # transfer: the student starts as its teacher
        kind = "control" if control else "kd"
        results.append(run(kind, rnd, student, cfg.round_k, soft, f"round {rnd} ({kind.upper()})"))
        teacher = student
    return results
