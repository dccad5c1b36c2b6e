"""Running one scene's forward pass over several processes (sequence parallelism, `vggt.models.sequence_parallel`).

Two ways in, with the same result as one process (global attention stays exact):

- `torchrun --nproc_per_node=N -m vggt reconstruct ...`: every rank runs the command; `join_torchrun` joins the
  process group torchrun describes (NCCL on GPUs, one per rank; gloo on the CPU), each rank computes its frames,
  rank 0 gathers the predictions and writes the outputs, the other ranks only compute;
- `vggt.reconstruct(..., processes=N)`, from a notebook or a script: N local processes are spawned for the
  forward pass (on 127.0.0.1) and the predictions come back to the caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vggt.errors import InputError
from vggt.models.sequence_parallel import (
    forward_sequence_parallel,
    gather_predictions,
    run_sequence_parallel,
    split_frames,
)
from vggt.models.streaming import StreamingOptions

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """Where this process sits: its rank among `world_size` processes of the default process group."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_torchrun(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun set up (once), and this rank's device: its own GPU on CUDA."""
    if not launched_by_torchrun():
        return Ranks(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), device


def parallel_forward(
    model: torch.nn.Module,
    images: torch.Tensor,
    query_points: torch.Tensor | None,
    streaming: StreamingOptions,
    processes: int,
    device: torch.device,
) -> dict[str, Any] | None:
    """The model's outputs for `images` [1, S, 3, H, W] computed over several processes: the ranks of a torchrun
    job (None on every rank but 0), or `processes` local processes spawned here."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        frames = split_frames(images.shape[1], dist.get_world_size())[dist.get_rank()]
        queries = None if query_points is None else query_points.to(device)
        local = forward_sequence_parallel(
            model, images[:, frames].to(device), query_points=queries, streaming=streaming
        )
        return gather_predictions(local)
    if images.shape[1] < processes:
        raise InputError(
            "{processes} {count} needs at least as many frames, got {frames}", count=processes, frames=images.shape[1]
        )
    result = run_sequence_parallel(
        model.cpu(), images, processes, query_points=query_points, streaming=streaming, device_type=device.type
    )
    return result.predictions
