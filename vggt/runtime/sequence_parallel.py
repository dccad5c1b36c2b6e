"""Sequence-parallel inference: the frames of one scene split over processes, with exact global attention.

Each process (rank) holds a contiguous run of the scene's frames; rank 0 holds frame 0, whose camera
and register tokens differ from the others'. The patch encoder, the frame-wise blocks and the dense
heads run on local frames only. Each global block exchanges keys and values, one group of attention
heads at a time (all-gather), so that local queries attend to every frame's keys exactly as in one
process. The camera head, which attends over all frames, gathers the camera tokens only; the track
head's tracker samples correlations on local frames and exchanges those.

    preds = forward_sequence_parallel(model, local_images, group)       # in each process: local frames
    full = gather_predictions(preds, group)                             # on rank 0: the whole scene
    result = run_sequence_parallel(model, images, world_size=2)         # spawns processes on 127.0.0.1

`torchrun` users call `forward_sequence_parallel` with `split_frames(num_frames, world_size)[rank]`. The family
models (VGGT-Omega, Pi3, Pi3X) go the same way through their streaming passes (`forward_family_sequence_parallel`).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from vggt.runtime.chunked_block import KeyValueGather
from vggt.runtime.engine import run_heads
from vggt.runtime.host_memory import scene_buffer
from vggt.runtime.onednn import onednn_linear
from vggt.runtime.options import StreamingOptions
from vggt.runtime.trunk import run_trunk

# Outputs with a frame axis (dim 1), split over the ranks (VGGT's, then those only the family models have); the rest
# are the same on every rank.
FRAME_KEYS = (
    *("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf", "images"),
    *("points", "local_points", "rays", "camera_poses", "camera_and_register_tokens"),
)
LOOPBACK = "127.0.0.1"


def split_frames(num_frames: int, world_size: int) -> list[slice]:
    """Contiguous runs of frames per rank, as even as possible; rank 0 gets frame 0."""
    if world_size < 1 or num_frames < world_size:
        raise ValueError(f"cannot split {num_frames} frames over {world_size} processes: need at least one each")
    base, extra = divmod(num_frames, world_size)
    sizes = [base + (rank < extra) for rank in range(world_size)]
    starts = [sum(sizes[:rank]) for rank in range(world_size)]
    return [slice(start, start + size) for start, size in zip(starts, sizes)]


@dataclass
class FrameGroup:
    """How a scene's frames are split over the ranks of a process group, and the exchanges between them."""

    group: dist.ProcessGroup | None
    counts: list[int]  # frames per rank
    rank: int
    device: torch.device  # where the exchanged tensors live (CUDA for NCCL)

    @classmethod
    def create(cls, local_frames: int, device: torch.device, group: dist.ProcessGroup | None = None) -> FrameGroup:
        """Agree with the other ranks on every rank's number of frames (a collective call)."""
        world = dist.get_world_size(group)
        local = torch.tensor([local_frames], device=device)
        counts = [torch.zeros_like(local) for _ in range(world)]
        dist.all_gather(counts, local, group=group)
        return cls(group, [int(c.item()) for c in counts], dist.get_rank(group), device)

    @property
    def num_frames(self) -> int:
        return sum(self.counts)

    @property
    def local(self) -> slice:
        start = sum(self.counts[: self.rank])
        return slice(start, start + self.counts[self.rank])

    def gather(self, x: Tensor, dim: int, per_frame: int = 1) -> Tensor:
        """Every rank's x ([..., counts[r] * per_frame, ...] along `dim`) concatenated in rank order."""
        longest = max(self.counts) * per_frame
        padded = x
        if x.shape[dim] < longest:
            pad_shape = list(x.shape)
            pad_shape[dim] = longest - x.shape[dim]
            padded = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
        # Scene-sized (the keys and values of every frame): in buffers outside the CPU heap, see host_memory.
        parts = scene_buffer((len(self.counts), *padded.shape), padded.dtype, padded.device).unbind(0)
        dist.all_gather(list(parts), padded.contiguous(), group=self.group)
        shape = list(x.shape)
        shape[dim] = self.num_frames * per_frame
        gathered = scene_buffer(shape, x.dtype, x.device)
        pieces = [p.narrow(dim, 0, c * per_frame) for p, c in zip(parts, self.counts)]
        return torch.cat(pieces, dim=dim, out=gathered)

    def from_first(self, x: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """Rank 0's x on every rank."""
        if x is None:
            x = torch.empty(shape, dtype=dtype, device=self.device)
        x = x.contiguous()
        dist.broadcast(x, src=dist.get_global_rank(self.group, 0) if self.group else 0, group=self.group)
        return x


@torch.no_grad()
def forward_sequence_parallel(
    model: Any,
    local_images: Tensor,
    group: dist.ProcessGroup | None = None,
    *,
    query_points: Tensor | None = None,
    heads: Collection[str] | None = None,
    streaming: StreamingOptions | None = None,
    conditioning: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """This rank's share of `model(images, query_points)` for its frames `local_images` [S_r, 3, H, W] or [B, S_r, ...].

    Every rank of `group` must call it, rank r with the r-th run of frames (see `split_frames`; rank 0
    holds frame 0). Returns the predictions of the local frames ([B, S_r, ...]); `pose_enc_list` too.
    Query points (pixels in frame 0) are needed on every rank. A family model (VGGT-Omega, Pi3, Pi3X: see
    `forward_family_sequence_parallel`) takes no query points or heads; Pi3X takes `conditioning` of its frames.
    """
    from vggt.models.vggt import VGGT

    if not isinstance(model, VGGT):
        return forward_family_sequence_parallel(model, local_images, group, streaming, conditioning)
    images, query_points = model.check_inputs(local_images, query_points)
    heads = model.heads_to_run(heads)
    device = model.aggregator.camera_token.device
    options = streaming or StreamingOptions.auto(device, max_frames_chunk_size=model.config.frames_chunk_size)
    frames = FrameGroup.create(images.shape[1], device, group)
    with onednn_linear(device.type == "cpu"):
        kept = run_trunk(
            model.aggregator,
            images,
            options,
            model.config.layers_needed(heads),
            includes_first=frames.rank == 0,
            gather=key_value_gather(frames),
        )
        patch_start_idx = model.aggregator.patch_start_idx
        predictions = run_heads(model, kept, images.shape, patch_start_idx, heads, query_points, options, shard=frames)
    predictions["images"] = images
    return predictions


def key_value_gather(frames: FrameGroup) -> KeyValueGather:
    """The keys and values exchange of the global blocks: keys and values [B, h, s_r * n, d] of this rank's frames
    (n tokens each: all of a frame's, or its camera and register tokens) -> every rank's, in frame order."""

    def gather(keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        per_frame = keys.shape[2] // frames.counts[frames.rank]
        return frames.gather(keys, 2, per_frame), frames.gather(values, 2, per_frame)

    return gather


@torch.no_grad()
def forward_family_sequence_parallel(
    model: Any,
    local_images: Tensor,
    group: dist.ProcessGroup | None = None,
    streaming: StreamingOptions | None = None,
    conditioning: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """This rank's share of the streaming pass of VGGT-Omega, Pi3 or Pi3X (`run_omega`, `run_pi3`) for its frames
    `local_images` [S_r, 3, H, W] or [B, S_r, ...] (Pi3X: `conditioning` intrinsics [B, S_r, 3, 3] and depth
    [B, S_r, H, W] of the same frames). The all-frames blocks exchange keys and values; Pi3X's metric scale,
    VGGT-Omega's camera and text-alignment heads read every rank's tokens; the per-frame heads stay local. Exact
    attention only: the fast mode's token merging is not combined with sequence parallelism.
    """
    from vggt.models.pi3 import Pi3
    from vggt.runtime.engine import StreamingEngine
    from vggt.runtime.omega_engine import run_omega
    from vggt.runtime.pi3_engine import run_pi3

    images = local_images.unsqueeze(0) if local_images.dim() == 4 else local_images
    device = next(model.parameters()).device
    frames = FrameGroup.create(images.shape[1], device, group)
    engine = StreamingEngine(streaming or StreamingOptions.auto(device))
    shared = dict(shard=frames, gather=key_value_gather(frames))
    if isinstance(model, Pi3):
        predictions = run_pi3(model, images, engine, **(conditioning or {}), **shared)
    else:
        predictions = run_omega(model, images, engine, **shared)
    predictions["images"] = images
    return predictions


def gather_predictions(
    predictions: dict[str, Any], group: dist.ProcessGroup | None = None, dst: int = 0
) -> dict[str, Any] | None:
    """The whole scene's predictions on rank `dst` (None on the others), from each rank's local ones."""
    rank = dist.get_rank(group)
    gathered: list[Any] = [None] * dist.get_world_size(group) if rank == dst else None
    local = {key: value.cpu() if isinstance(value, Tensor) else value for key, value in predictions.items()}
    local["pose_enc_list"] = [p.cpu() for p in predictions.get("pose_enc_list", [])]
    dist.gather_object(local, gathered, dst=dst, group=group)
    if rank != dst:
        return None
    full: dict[str, Any] = {}
    for key in gathered[0]:
        if key in FRAME_KEYS:
            full[key] = torch.cat([g[key] for g in gathered], dim=1)
        elif key == "pose_enc_list":
            full[key] = [torch.cat(parts, dim=1) for parts in zip(*(g[key] for g in gathered))]
        elif isinstance(gathered[0][key], Tensor):  # the same on every rank (Pi3X's metric scale, text alignment)
            full[key] = gathered[0][key]
    return full


@dataclass
class SequenceParallelResult:
    """What `run_sequence_parallel` returns: the whole scene's predictions, and each rank's forward memory."""

    predictions: dict[str, Any]
    peak_memory_mb: list[float] | None  # memory the forward pass added at its peak, per rank (with a `probe`)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, job: dict[str, Any], results: Any) -> None:
    """One rank of `run_sequence_parallel`: join the group, run its frames, send rank 0's gathered result."""
    use_cuda = job["device_type"] == "cuda"
    dist.init_process_group(
        "nccl" if use_cuda else "gloo", init_method=f"tcp://{LOOPBACK}:{port}", rank=rank, world_size=world_size
    )
    try:
        device = torch.device("cuda", rank % torch.cuda.device_count()) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        model = job["model"].to(device).eval()
        for p in model.parameters():  # bring the shared weights into this process before measuring
            p.data.sum()
        frames = split_frames(job["images"].shape[1], world_size)[rank]
        images = job["images"][:, frames]
        conditioning = {name: value[:, frames].to(device) for name, value in (job["conditioning"] or {}).items()}
        query_points = job["query_points"]
        probe = job["probe"]
        with probe(device) if probe is not None else contextlib.nullcontext() as peak:
            local = forward_sequence_parallel(
                model,
                images.to(device),
                query_points=None if query_points is None else query_points.to(device),
                heads=job["heads"],
                streaming=job["streaming"],
                conditioning=conditioning or None,
            )
        full = gather_predictions(local)
        memory: list[Any] | None = None
        if probe is not None:
            memory = [None] * world_size
            dist.all_gather_object(memory, peak.mb)
        if rank == 0:
            torch.save({"predictions": full, "peak_memory_mb": memory}, job["output"])
            results.put("done")
    finally:
        dist.destroy_process_group()


def run_sequence_parallel(
    model: Any,
    images: Tensor,
    world_size: int = 2,
    *,
    query_points: Tensor | None = None,
    heads: Collection[str] | None = None,
    streaming: StreamingOptions | None = None,
    device_type: str = "cpu",
    timeout_s: float = 3600.0,
    probe: Callable[[torch.device], Any] | None = None,
    conditioning: dict[str, Tensor] | None = None,
) -> SequenceParallelResult:
    """Spawn `world_size` local processes on 127.0.0.1 that run `model` on `images` sequence-parallel.

    Works from a notebook. `model` should be on the CPU (its weights are shared with the processes,
    not copied); with `device_type="cuda"` rank r moves it to GPU r and the ranks talk over NCCL,
    otherwise they run on the CPU over gloo. Returns the whole scene's predictions (on the CPU).

    `probe`: measures each rank's forward pass, `with probe(device) as peak:` then `peak.mb` (e.g.
    `benchmarks/memory_probe.PeakMemory`; importable by the spawned processes); None measures nothing.
    """
    import torch.multiprocessing as mp

    if hasattr(model, "check_inputs"):
        images, query_points = model.check_inputs(images, query_points)
    elif images.dim() == 4:  # a family model: [B, S, 3, H, W] (see forward_family_sequence_parallel)
        images = images.unsqueeze(0)
    split_frames(images.shape[1], world_size)  # fail early on too few frames
    context = mp.get_context("spawn")
    results = context.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "predictions.pt"
        job = dict(
            model=model,
            images=images,
            query_points=query_points,
            heads=heads,
            streaming=streaming,
            device_type=device_type,
            output=str(output),
            probe=probe,
            conditioning=conditioning,
        )
        procs = mp.start_processes(
            _worker, args=(world_size, _free_port(), job, results), nprocs=world_size, join=False, start_method="spawn"
        )
        deadline = timeout_s
        while True:
            try:
                results.get(timeout=1.0)
                break
            except queue.Empty:
                deadline -= 1.0
                if procs.join(timeout=0) or deadline <= 0:  # every process ended without a result, or too slow
                    raise RuntimeError("the sequence-parallel processes ended without a result") from None
        while not procs.join():
            pass
        saved = torch.load(output, weights_only=True)
    return SequenceParallelResult(saved["predictions"], saved["peak_memory_mb"])
