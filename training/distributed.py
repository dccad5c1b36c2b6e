"""Process groups under torchrun: DDP or FSDP wrapping, rank helpers and per-rank seeding.

A run started with plain `python` is a world of one process and uses no process group at all;
under `torchrun` the usual environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) decide. gloo serves CPU runs, NCCL GPU runs.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vggt.utils.device import resolve_device
from vggt.utils.distributed import TorchrunRanks, join_process_group, rank_device

DDP_STRATEGY = "ddp"
FSDP_STRATEGY = "fsdp"
STRATEGIES = (DDP_STRATEGY, FSDP_STRATEGY)


@dataclass(frozen=True)
class DistributedContext(TorchrunRanks):
    """Where this process sits in the job (ranks) and the device it trains on."""

    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.parallel


def setup_distributed(device: str = "auto", backend: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the torchrun process group (if any) and pick this process's device.

    Args:
        device: "auto" (this rank's GPU when CUDA is available, else CPU), "cpu" or "cuda" (vggt.utils.device).
        backend: "auto" (NCCL on GPU, gloo on CPU), "gloo" or "nccl".
    """
    ranks = TorchrunRanks.from_environment()
    torch_device = resolve_device(device)
    if torch_device.type not in ("cpu", "cuda"):
        raise ValueError(f"training runs on 'cpu' or 'cuda' (one GPU per process), got device={device!r}")
    torch_device = rank_device(torch_device, ranks.local_rank)
    if ranks.parallel:
        join_process_group(torch_device, backend, timeout_minutes)
    return DistributedContext(ranks.rank, ranks.world_size, ranks.local_rank, torch_device)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_metrics(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over the ranks that reported them (a term may be absent on some ranks)."""
    if not dist.is_initialized():
        return dict(values)
    everyone: list[dict[str, float] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, dict(values))
    merged: dict[str, float] = {}
    for name in sorted({k for rank_values in everyone for k in rank_values}):
        reported = [rank_values[name] for rank_values in everyone if name in rank_values]
        merged[name] = sum(reported) / len(reported)
    return merged


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's `obj`, in rank order (a list of one in a one-process run)."""
    if not dist.is_initialized():
        return [obj]
    everyone: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, obj)
    return everyone


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from rank `src` to every rank."""
    if not dist.is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU) with one value."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """A distinct, reproducible seed per rank, for anything random that must differ between ranks."""
    return seed + 1_000_003 * rank


def wrap_model(
    model: nn.Module, ctx: DistributedContext, strategy: str = DDP_STRATEGY, find_unused_parameters: bool = True
) -> nn.Module:
    """Wrap for data parallelism: DDP replicates the model, FSDP shards it per transformer block.

    A one-process run gets the model back unchanged. `find_unused_parameters` (DDP) must stay on when
    some steps leave heads without a loss (batches without depth, the track head without queries).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"distributed.strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not ctx.enabled:
        return model
    if strategy == DDP_STRATEGY:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    return _shard_with_fsdp(model)


def _shard_with_fsdp(model: nn.Module) -> nn.Module:
    """FSDP2: shard each transformer block, then the remainder, across all ranks."""
    import warnings

    from torch.distributed.fsdp import fully_shard

    from vggt.layers.block import Block

    # VGGT returns views (e.g. the last pose encoding of the list); the losses never modify them in place.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")

    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module)
    fully_shard(model)
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (FSDP2 shards in place and needs no unwrapping)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def parameter_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in name order: equal fingerprints mean bitwise-equal weights."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_replicas(model: nn.Module, report: Path, is_main: bool) -> None:
    """Fingerprint every rank's parameters (DDP replicas); write them to `report` and fail if they differ."""
    everyone = all_gather_objects(parameter_fingerprint(model))
    if is_main:
        report.write_text(json.dumps({"fingerprints": everyone}, indent=2))
    if len(set(everyone)) != 1:
        raise RuntimeError(f"DDP replicas diverged: parameter fingerprints per rank {everyone}")
