"""Iterative teacher-student training: a teacher on hard labels, then rounds of distillation.

Round 0 trains the teacher on cross-entropy: a wider EAN when ``teacher`` is set, else the student
itself (the paper's same-size recipe). Each later round trains a student on the hard labels plus
soft labels that its teachers compute online, on the very augmented batch the student sees, so a
target always describes the image it is paired with. With ``init: transfer`` a round's student
starts from the previous round's student, optimizer state included; with ``teacher_set: ensemble``
the soft labels of round k average the round-0 teacher and every student before k, which is how
the labels are refined round after round.

A control run (``control``) trains each round again from the very same starting point, with the
same epochs, schedule, shuffling and augmentation, on cross-entropy alone: the only difference
left is the teacher, which is what a gain must be measured against.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import TypeAdapter
from torch import nn
from tqdm import tqdm

from trainer.config import ArchConfig, EANConfig, TrainConfig
from trainer.data import Split
from trainer.distill import kd_loss, soft_labels
from trainer.distributed import ONE_PROCESS, World, init_world
from trainer.model import Classifier, build_model
from trainer.targets import TargetCache, load_or_build
from trainer.teacher import StoreEnsemble, StoreTeacher, resolve
from trainer.views import augment


class ResumeError(Exception):
    """A saved round state that does not belong to the round being resumed."""


# A published version's training state, so a later stage's student can start where it ended.
CHECKPOINT_FILE = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# What scores faces, and so can teach: a student, or published versions (one, or an ensemble of them).
Teacher = nn.Module | StoreTeacher | StoreEnsemble


@torch.no_grad()
def _logits(model: Teacher, x: np.ndarray, device: torch.device, flip: bool = False) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(x), 512):
        xb = torch.from_numpy(x[i : i + 512]).to(device)[:, None].float()
        out.append(model(xb.flip(3) if flip else xb).float().cpu())
    return torch.cat(out)


@dataclass
class Evaluation:
    accuracy: float  # one pass, as the service runs the model
    accuracy_tta: float  # with the mirror's logits averaged in: a reference, never served


def evaluate(model: Teacher, split: Split, device: torch.device, tta: bool = True) -> Evaluation:
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
    kind: str  # "teacher" or "ce" (round 0), "kd", or "control"
    model: Classifier | StoreEnsemble
    epochs: int
    history: list[dict] = field(default_factory=list)  # per epoch: loss, val accuracy
    evaluation: Evaluation | None = None
    wall_time_s: float = 0.0

    def as_dict(self) -> dict:
        assert self.evaluation is not None
        return {
            "round": self.round, "kind": self.kind, "epochs": self.epochs, "wall_time_s": round(self.wall_time_s, 1),
            "val_accuracy": self.evaluation.accuracy, "val_accuracy_tta": self.evaluation.accuracy_tta,
            "arch": None if isinstance(self.model, StoreEnsemble) else self.model.cfg.model_dump(),
            "teachers": self.model.refs if isinstance(self.model, StoreEnsemble) else None,
            "history": self.history,
        }


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=cfg.round0.lr, momentum=0.9, nesterov=True,
    )


def _teacher_output(teachers: list[Teacher], xb: torch.Tensor) -> torch.Tensor:
    """The members' mean output: EAN logits and published members' log-probabilities alike. Averaging
    the two kinds is sound because softmax ignores a per-face shift, which is all that tells a
    log-probability from a logit."""
    with torch.no_grad():
        return torch.stack([t(xb) for t in teachers]).mean(0).float()


def make_batch(x: torch.Tensor, idx: torch.Tensor, gen: torch.Generator, cfg: TrainConfig, teachers: list[Teacher],
               cache: TargetCache | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A step's faces and, when it has teachers, their soft labels at temperature T.

    Without a cache each face gets a fresh view that the teachers score now; with one, each face gets
    one of its fixed views, drawn from ``gen``, with the teachers' output already computed for it.
    """
    if cache is None:
        xb = augment(x, gen, cfg.augment)
        return xb, soft_labels(_teacher_output(teachers, xb), cfg.temperature) if teachers else None
    which = torch.randint(cache.count, (len(idx),), generator=gen, device=gen.device)
    xb, output = cache.batch(x, idx, which)
    return xb, soft_labels(output, cfg.temperature) if teachers else None


def bf16_pays(arch: ArchConfig) -> bool:
    """Whether bf16 autocast trains this family faster on this CPU (docs/training.md has the tables).

    With AMX tiles it doubles dense 3×3 convolutions and still slows depthwise-separable ones; without
    them bf16 is emulated, and every family trains 10× to 25× slower than in fp32.
    """
    return torch.cpu._is_amx_tile_supported() and not isinstance(arch, EANConfig)


def use_bf16(cfg: TrainConfig, arch: ArchConfig, device: torch.device) -> bool:
    if device.type != "cpu" or cfg.precision == "fp32":
        return False
    return cfg.precision == "bf16" or bf16_pays(arch)


def train_round(
    model: Classifier,
    opt: torch.optim.Optimizer,
    peak_lr: float,
    epochs: int,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    device: torch.device,
    teachers: list[Teacher],
    round_seed: int,
    desc: str,
    world: World = ONE_PROCESS,
    partial: Path | None = None,
    cache: TargetCache | None = None,
) -> list[dict]:
    """One round on ``opt`` (whose momentum carries over between rounds of one student).

    Under torchrun each rank takes its shard of the epoch and ``batch_size / world`` faces a step,
    so the effective batch, the step count and the schedule are those of one process.

    With ``partial``, the round's whole state (weights, optimizer, schedule, every random generator,
    history) is written there after each epoch, and a round that finds it continues from it: an
    interrupted round resumes where it stopped and ends with the weights it would have had.
    Each history entry's ``wall_s`` counts the round's training time, across resumes.
    """
    # Dropout draws from the global generator: seeded, a round and its control draw alike.
    torch.manual_seed(round_seed + 100_003 * world.rank)
    gen = torch.Generator(device=device).manual_seed(round_seed + 100_003 * world.rank)
    cpu_gen = torch.Generator().manual_seed(round_seed)  # the same epoch order on every rank, then sharded
    x_all = torch.from_numpy(train.x)[:, None]
    y_all = torch.from_numpy(train.y)
    votes = torch.from_numpy(train.votes) if train.votes is not None and cfg.ferplus_weight > 0 else None
    batch = max(1, cfg.batch_size // world.size)
    steps = math.ceil((len(train) // world.size) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak_lr, total_steps=epochs * steps, pct_start=0.15)
    step_model: nn.Module = model
    if world.size > 1:
        ids = [device.index] if device.type == "cuda" else None
        step_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    for t in teachers:
        t.eval()
    bf16 = use_bf16(cfg, model.cfg, device)
    history: list[dict] = []
    state_path = _rank_path(partial, world) if partial is not None else None
    if state_path is not None and state_path.exists():
        history = _restore(state_path, model, opt, sched, gen, cpu_gen, epochs)
    wall0 = history[-1]["wall_s"] if history else 0.0
    start = time.perf_counter()
    bar = tqdm(range(len(history), epochs), desc=desc, unit="epoch", dynamic_ncols=True,
               disable=not world.is_main, initial=len(history), total=epochs)
    for epoch in bar:
        model.train()
        order = world.shard(torch.randperm(len(train), generator=cpu_gen))
        total, seen, t0 = 0.0, 0, time.perf_counter()
        for i in range(steps):
            idx = order[i * batch : (i + 1) * batch]
            xb, soft = make_batch(x_all[idx].to(device, non_blocking=True).float(), idx, gen, cfg, teachers, cache)
            if device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y_all[idx].to(device)
            if soft is not None and votes is not None:
                vb = votes[idx].to(device)
                has = vb.sum(1, keepdim=True) > 0
                soft = torch.where(has, (1 - cfg.ferplus_weight) * soft + cfg.ferplus_weight * vb, soft)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = step_model(xb)
            loss = kd_loss(logits.float(), soft, yb, cfg.temperature, cfg.alpha, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        images_per_s = seen * world.size / (time.perf_counter() - t0)
        entry = {"epoch": epoch + 1, "train_loss": total / seen, "val_accuracy": None,
                 "images_per_s": round(images_per_s, 1), "wall_s": round(wall0 + time.perf_counter() - start, 1)}
        if world.is_main:
            entry["val_accuracy"] = evaluate(model, val, device, tta=False).accuracy
            bar.set_postfix(loss=f"{total / seen:.3f}", val=f"{entry['val_accuracy']:.4f}")
        history.append(entry)
        if state_path is not None:
            _save_state(state_path, model, opt, sched, gen, cpu_gen, history)
        world.barrier()
    return history


def _rank_path(partial: Path, world: World) -> Path:
    """Each rank keeps its own state: its generators differ (rank-seeded), its weights do not."""
    return partial if world.is_main else partial.with_name(f"{partial.stem}.rank{world.rank}{partial.suffix}")


def _save_state(path: Path, model: Classifier, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                gen: torch.Generator, cpu_gen: torch.Generator, history: list[dict]) -> None:
    state = {"arch": model.cfg.model_dump(), "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "gen": gen.get_state(), "cpu_gen": cpu_gen.get_state(),
             "torch_rng": torch.get_rng_state(), "history": history}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous epoch's state, never a torn file


def _restore(path: Path, model: Classifier, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
             gen: torch.Generator, cpu_gen: torch.Generator, epochs: int) -> list[dict]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["arch"] != model.cfg.model_dump():
        raise ResumeError(f"{path} holds another architecture than this round's: remove it to start the round over")
    if len(state["history"]) > epochs:
        raise ResumeError(f"{path} ran {len(state['history'])} epochs, more than this round's {epochs}")
    model.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["gen"])
    cpu_gen.set_state(state["cpu_gen"])
    torch.set_rng_state(state["torch_rng"])
    tqdm.write(f"{path.name}: resuming after epoch {len(state['history'])} of {epochs}")
    return state["history"]


_ARCH: TypeAdapter[ArchConfig] = TypeAdapter(ArchConfig)


def new_model(arch: ArchConfig, device: torch.device) -> Classifier:
    model = build_model(arch).to(device)
    # Module.to's stub lacks memory_format, which torch documents and accepts.
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model  # type: ignore[call-overload]


def save_checkpoint(path: Path, model: Classifier, opt: torch.optim.Optimizer | None = None) -> None:
    """nanoGPT style: the architecture travels with the weights (and the optimizer, for transfer)."""
    ckpt = {"arch": model.cfg.model_dump(), "state_dict": model.state_dict()}
    if opt is not None:
        ckpt["optimizer"] = opt.state_dict()
    torch.save(ckpt, path)


def load_checkpoint(path: Path, device: torch.device) -> tuple[Classifier, dict | None]:
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = new_model(_ARCH.validate_python(ckpt["arch"]), device)
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt.get("optimizer")


def _round_seed(cfg: TrainConfig, rnd: int) -> int:
    return cfg.seed * 1000 + rnd


def _previous(cfg: TrainConfig, rnd: int, run: Path) -> Path | None:
    """The checkpoint round ``rnd``'s student transfers from; None when it starts afresh."""
    if rnd == 1 and cfg.init_from is not None:
        store, version = resolve(cfg.init_from)
        path = store.version_dir(cfg.init_from.name, version) / CHECKPOINT_FILE
        if not path.exists():
            raise ResumeError(f"{cfg.init_from.name} v{version} has no {CHECKPOINT_FILE} to start round 1 from")
        return path
    other_teacher = cfg.teacher is not None or cfg.teacher_store is not None
    if cfg.init == "scratch" or (rnd == 1 and other_teacher):  # another architecture cannot be copied
        return None
    return run / f"round{rnd - 1}.pt"


def _start(cfg: TrainConfig, rnd: int, run: Path, device: torch.device) -> tuple[Classifier, torch.optim.SGD]:
    """Round ``rnd``'s student and optimizer: transferred from the previous round's or freshly seeded.

    The T-S run and its control both start here, so each round's pair starts identically.
    """
    previous = _previous(cfg, rnd, run)
    if previous is not None:
        if not previous.exists():
            raise FileNotFoundError(f"{previous} is missing: round {rnd} starts from it")
        model, opt_state = load_checkpoint(previous, device)
        if model.cfg != cfg.student:
            raise ResumeError(f"{previous} is another architecture than the student's: it cannot be transferred")
        opt = _optimizer(model, cfg)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        return model, opt
    torch.manual_seed(_round_seed(cfg, rnd))
    model = new_model(cfg.student, device)
    return model, _optimizer(model, cfg)


def round_lr(cfg: TrainConfig, rnd: int) -> float:
    return cfg.round0.lr if rnd == 0 else cfg.round_k.lr * cfg.lr_decay ** (rnd - 1)


def _setup(cfg: TrainConfig) -> tuple[World, torch.device]:
    seed_everything(cfg.seed)
    world, device = init_world(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return world, device


def _partial(path: Path, resume: bool, world: World) -> Path:
    """Where a round keeps its per-epoch state; a fresh (not resumed) round drops any it finds."""
    if not resume:
        _rank_path(path, world).unlink(missing_ok=True)
    return path


def fit(train: Split, val: Split, cfg: TrainConfig, out: Path, rounds: list[int] | None = None,
        resume: bool = False) -> list[RoundResult]:
    """Round 0 plus ``cfg.rounds`` T-S rounds; ``out`` receives ``round<k>.pt`` and ``rounds.json``.

    ``rounds`` trains only those rounds, taking the others from ``out``. ``resume`` keeps the rounds
    ``out`` has finished and continues an interrupted one from its last epoch.
    """
    world, device = _setup(cfg)
    info = {"device": device.type if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "processes": world.size}
    if world.is_main:
        (out / "run.json").write_text(json.dumps(info, indent=1))
    log = out / "rounds.json"
    logged = {r["round"]: r for r in json.loads(log.read_text())} if log.exists() else {}
    wanted = set(rounds) if rounds is not None else set(range(cfg.rounds + 1))
    if resume:
        wanted -= {k for k in logged if (out / f"round{k}.pt").exists()}
    done = logged if rounds is not None or resume else {}
    results: list[RoundResult] = []

    def finish(result: RoundResult, opt: torch.optim.Optimizer | None) -> None:
        results.append(result)
        if not world.is_main:
            world.barrier()  # rank 0 writes the checkpoint the next round may start from
            return
        result.evaluation = evaluation = evaluate(result.model, val, device)
        if not isinstance(result.model, StoreEnsemble):  # a store teacher stays in its store
            save_checkpoint(out / f"round{result.round}.pt", result.model, opt)
        trained = [x.as_dict() for x in results if x.evaluation is not None]  # the rounds of this invocation
        summary = {r["round"]: r for r in [*done.values(), *trained]}
        log.write_text(json.dumps([summary[k] for k in sorted(summary)], indent=1))
        (out / f"round{result.round}.partial.pt").unlink(missing_ok=True)
        tqdm.write(f"round {result.round} ({result.kind}): val {evaluation.accuracy:.4f} "
                   f"(flip TTA {evaluation.accuracy_tta:.4f}) [{result.wall_time_s:.0f} s]")
        world.barrier()

    for rnd in range(cfg.rounds + 1):
        if rnd == 0 and cfg.teacher_store is not None:
            t0 = time.perf_counter()
            teacher = StoreEnsemble(cfg.teacher_store, threads=torch.get_num_threads())
            finish(RoundResult(0, "teacher", teacher, 0, wall_time_s=time.perf_counter() - t0), None)
            continue
        if rnd not in wanted:
            model, _ = load_checkpoint(out / f"round{rnd}.pt", device)
            kind = done.get(rnd, {}).get("kind", "kd")
            results.append(RoundResult(rnd, kind, model, 0, []))
            continue
        if rnd == 0:
            arch = cfg.teacher or cfg.student
            torch.manual_seed(_round_seed(cfg, 0))
            model = new_model(arch, device)
            opt = _optimizer(model, cfg)
            kind, teachers = ("teacher" if cfg.teacher else "ce"), list[Teacher]()
        else:
            model, opt = _start(cfg, rnd, out, device)
            kind = "kd"
            sets: dict[str, list[Teacher]] = {"ensemble": [m for r in results for m in _members(r.model)],
                                              "first": [results[0].model], "previous": [results[-1].model]}
            teachers = sets[cfg.teacher_set]
        epochs = cfg.round0.epochs if rnd == 0 else cfg.round_k.epochs
        cache = _cache(cfg, results[0].model, train, out, world) if rnd == 1 else None
        history = train_round(model, opt, round_lr(cfg, rnd), epochs, train, val, cfg, device, teachers,
                              _round_seed(cfg, rnd), f"round {rnd} ({kind})", world,
                              _partial(out / f"round{rnd}.partial.pt", resume, world), cache)
        finish(RoundResult(rnd, kind, model, epochs, history, wall_time_s=history[-1]["wall_s"]), opt)
    return results


TARGETS_FILE = "targets.pt"


def _cache(cfg: TrainConfig, teacher: Teacher, train: Split, out: Path, world: World) -> TargetCache | None:
    """Round 1's fixed views and its published teachers' outputs on them, when ``teacher_views`` asks."""
    if not cfg.teacher_views:
        return None
    if not isinstance(teacher, StoreEnsemble):
        raise ValueError("teacher_views needs published teachers (teacher_store)")  # the config's validator's rule

    def build() -> TargetCache:
        return load_or_build(out / TARGETS_FILE, teacher, teacher.refs, train, cfg.teacher_views, cfg.seed,
                             cfg.augment)

    cache = build() if world.is_main else None  # rank 0 scores; the others read what it wrote
    world.barrier()
    return cache or build()


def _members(model: Classifier | StoreEnsemble) -> list[Teacher]:
    """An ensemble's members vote one by one: a student joining it weighs as much as each of them."""
    return list(model.members) if isinstance(model, StoreEnsemble) else [model]


def control(train: Split, val: Split, cfg: TrainConfig, ts_run: Path, out: Path, rounds: list[int],
            resume: bool = False) -> list[dict]:
    """Each T-S round again on cross-entropy alone, from the same start (``ts_run``'s checkpoints).

    ``resume`` keeps the controls ``out`` has finished and continues an interrupted one.
    """
    world, device = _setup(cfg)
    log = out / "control.json"
    done = {r["round"]: r for r in json.loads(log.read_text())} if log.exists() else {}
    for rnd in rounds:
        if rnd < 1:
            raise ValueError("round 0 is cross-entropy already: controls start at round 1")
        if resume and rnd in done and (out / f"control{rnd}.pt").exists():
            continue
        model, opt = _start(cfg, rnd, ts_run, device)
        # The control trains on the very views its T-S round drew from, without their soft labels.
        cache = None
        if rnd == 1 and cfg.teacher_store is not None and cfg.teacher_views:
            cache = _cache(cfg, StoreEnsemble(cfg.teacher_store, threads=torch.get_num_threads()), train, ts_run, world)
        history = train_round(model, opt, round_lr(cfg, rnd), cfg.round_k.epochs, train, val, cfg, device, [],
                              _round_seed(cfg, rnd), f"round {rnd} (control)", world,
                              _partial(out / f"control{rnd}.partial.pt", resume, world), cache)
        if not world.is_main:
            continue
        evaluation = evaluate(model, val, device)
        result = RoundResult(rnd, "control", model, cfg.round_k.epochs, history, evaluation, history[-1]["wall_s"])
        save_checkpoint(out / f"control{rnd}.pt", model)
        done[rnd] = result.as_dict()
        log.write_text(json.dumps([done[k] for k in sorted(done)], indent=1))
        (out / f"control{rnd}.partial.pt").unlink(missing_ok=True)
        tqdm.write(f"round {rnd} (control): val {evaluation.accuracy:.4f}")
    return [done[k] for k in sorted(done)]
