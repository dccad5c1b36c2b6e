"""The process group of a `torchrun` job: this process's rank, its device, and joining the group.

One piece for sequence-parallel inference (`vggt.pipeline.parallel`) and training (`training.distributed`).
torchrun describes the job in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a
process started without it is a world of one and joins no group. NCCL serves GPU ranks, gloo CPU ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class TorchrunRanks:
    """Where this process sits: its rank among `world_size` processes, and its rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> TorchrunRanks:
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """This rank's own GPU (made the current one) when `device` is CUDA; otherwise `device` itself."""
    if device.type != "cuda":
        return device
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def join_process_group(device: torch.device, backend: str = "auto", timeout_minutes: float | None = None) -> None:
    """Initialise the default process group once (a no-op when it already is): `backend` "auto" is NCCL for a
    CUDA `device`, gloo otherwise; `timeout_minutes` None keeps torch's default."""
    if dist.is_initialized():
        return
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend not in BACKENDS:
        raise ValueError(f"distributed.backend must be 'auto', 'gloo' or 'nccl', got {backend!r}")
    timeout = None if timeout_minutes is None else timedelta(minutes=timeout_minutes)
    dist.init_process_group(backend=backend, timeout=timeout)
