"""Running one scene's forward pass over several processes (sequence parallelism, `vggt.runtime.sequence_parallel`).

Two ways in, with the same result as one process (global attention stays exact):

- `torchrun --nproc_per_node=N -m vggt reconstruct ...`: every rank runs the command; `join_torchrun` joins the
  process group torchrun describes (NCCL on GPUs, one per rank; gloo on the CPU), each rank computes its frames,
  rank 0 gathers the predictions and writes the outputs, the other ranks only compute;
- `vggt.reconstruct(..., processes=N)`, from a notebook or a script: N local processes are spawned for the
  forward pass (on 127.0.0.1) and the predictions come back to the caller.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from vggt.errors import InputError
from vggt.runtime.options import StreamingOptions
from vggt.runtime.sequence_parallel import (
    forward_sequence_parallel,
    gather_predictions,
    run_sequence_parallel,
    split_frames,
)
from vggt.utils.distributed import TorchrunRanks, join_process_group, rank_device


def join_torchrun(device: torch.device) -> tuple[TorchrunRanks, torch.device]:
    """Join the process group torchrun set up (once), and this rank's device: its own GPU on CUDA."""
    ranks = TorchrunRanks.from_environment()
    if not ranks.parallel:
        return TorchrunRanks(), device
    device = rank_device(device, ranks.local_rank)
    join_process_group(device)
    return TorchrunRanks(dist.get_rank(), dist.get_world_size(), ranks.local_rank), device


def parallel_forward(
    model: torch.nn.Module,
    images: torch.Tensor,
    query_points: torch.Tensor | None,
    streaming: StreamingOptions,
    processes: int,
    device: torch.device,
    conditioning: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any] | None:
    """The model's outputs for `images` [1, S, 3, H, W] computed over several processes: the ranks of a torchrun
    job (None on every rank but 0), or `processes` local processes spawned here. `conditioning`: Pi3X's known
    intrinsics [1, S, 3, 3] and depth [1, S, H, W], split over the processes with the frames."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        frames = split_frames(images.shape[1], dist.get_world_size())[dist.get_rank()]
        queries = None if query_points is None else query_points.to(device)
        local_conditioning = {name: value[:, frames].to(device) for name, value in (conditioning or {}).items()}
        local = forward_sequence_parallel(
            model,
            images[:, frames].to(device),
            query_points=queries,
            streaming=streaming,
            conditioning=local_conditioning or None,
        )
        return gather_predictions(local)
    if images.shape[1] < processes:
        raise InputError(
            "{processes} {count} needs at least as many frames, got {frames}", count=processes, frames=images.shape[1]
        )
    result = run_sequence_parallel(
        model.cpu(),
        images,
        processes,
        query_points=query_points,
        streaming=streaming,
        device_type=device.type,
        conditioning=conditioning,
    )
    return result.predictions
