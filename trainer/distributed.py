"""Data-parallel training under torchrun: one process per core or GPU, gloo on CPU, nccl on GPU.

    torchrun --standalone --nproc_per_node=2 -m trainer fit ...

Without torchrun's environment (WORLD_SIZE unset) everything runs in this one process. Rank 0
alone evaluates, writes checkpoints and reports, and publishes; the others wait at a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU")
    return torch.device(name)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's order; every rank gets as many, so all take as many steps."""
        return order[self.rank :: self.size][: len(order) // self.size]


ONE_PROCESS = World()


def init_world(device_name: str) -> tuple[World, torch.device]:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if size == 1:
        return ONE_PROCESS, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size), device


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
