"""Whether a run will fit: a model of the peak memory of one forward pass, and the check before a run.

`estimate_inference_memory` gives a rough peak for one forward pass over S frames, and `check_memory` stops with
advice (an InsufficientMemoryError) before a run that would not fit in the free memory of the device.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from vggt.errors import InsufficientMemoryError
from vggt.models.config import VGGTConfig

logger = logging.getLogger(__name__)

GIB = 1024**3

# Memory model (see `estimate_inference_memory`). Live tensors of one transformer block, in units of
# its token tensor [tokens, embed_dim]: q, k, v, attention output, MLP hidden (mlp_ratio of them) and residuals.
BLOCK_WORKING_SET_TENSORS = 6
# Float32 values per pixel, in units of the DPT feature width, live in a dense head chunk: the full-resolution
# map (features / 2 channels) before and after upsampling.
DENSE_HEAD_TENSORS_PER_PIXEL_FEATURE = 1
# Float32 values per pixel in the outputs: depth, depth confidence, 3 world coordinates, point confidence,
# and the 3 image channels.
OUTPUT_VALUES_PER_PIXEL = 9
# Margin for the allocator's fragmentation and what the estimate leaves out.
MEMORY_SAFETY_FACTOR = 1.25
# CUDA context, cuDNN/cuBLAS workspaces.
CUDA_FIXED_OVERHEAD_BYTES = GIB // 2


@dataclass
class MemoryEstimate:
    """A rough peak of one forward pass, in bytes, split by what uses it."""

    weights: int
    aggregator: int
    dense_heads: int
    outputs: int
    overhead: int

    @property
    def total(self) -> int:
        subtotal = self.weights + self.aggregator + self.dense_heads + self.outputs
        return int(subtotal * MEMORY_SAFETY_FACTOR) + self.overhead


def estimate_inference_memory(
    config: VGGTConfig,
    num_frames: int,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    num_parameters: int | None = None,
    weight_bytes: int = 4,
    device_type: str = "cpu",
    frames_chunk_size: int | None = None,
) -> MemoryEstimate:
    """Rough peak memory of `model(images)` for `num_frames` images of `height` x `width` pixels.

    Counts the weights, the aggregator outputs kept for the heads (in `dtype` plus a float32 copy), the working
    set of one global-attention block over all frames, one chunk of `frames_chunk_size` (default
    `config.frames_chunk_size`) frames in each dense head (float32), and the float32 outputs. Attention itself
    is assumed to run without materialising the score matrix (fused scaled-dot-product kernels).
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"need at least one frame of positive size, got {num_frames} frames of {height}x{width}")
    act_bytes = torch.finfo(dtype).bits // 8
    if num_parameters is None:
        num_parameters = count_parameters_of_config(config)
    tokens_per_frame = (height // config.patch_size) * (width // config.patch_size) + config.patch_start_idx
    all_tokens = num_frames * tokens_per_frame

    kept = len(config.layers_needed()) * all_tokens * config.head_dim_in * (act_bytes + 4)
    block = (BLOCK_WORKING_SET_TENSORS + config.mlp_ratio) * all_tokens * config.embed_dim * act_bytes
    chunk = frames_chunk_size or config.frames_chunk_size or num_frames
    chunk = min(chunk, num_frames)
    dense = chunk * height * width * config.dpt_features * DENSE_HEAD_TENSORS_PER_PIXEL_FEATURE * 4
    outputs = num_frames * height * width * OUTPUT_VALUES_PER_PIXEL * 4
    overhead = CUDA_FIXED_OVERHEAD_BYTES if device_type == "cuda" else 0
    return MemoryEstimate(
        weights=num_parameters * weight_bytes,
        aggregator=int(kept + block),
        dense_heads=int(dense),
        outputs=int(outputs),
        overhead=overhead,
    )


def count_parameters_of_config(config: VGGTConfig) -> int:
    """Parameter count of a VGGT built from `config` (built on the meta device: no memory used)."""
    from vggt.models.vggt import VGGT

    with torch.device("meta"):
        model = VGGT(config)
    return sum(p.numel() for p in model.parameters())


def available_memory(device: torch.device) -> int | None:
    """Free bytes on `device` (CUDA: free device memory; CPU: available RAM), None where unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_memory(estimate: MemoryEstimate, device: torch.device, num_frames: int, height: int, width: int) -> None:
    """Raise InsufficientMemoryError with advice when `estimate` exceeds the free memory of `device`."""
    free = available_memory(device)
    need = estimate.total
    logger.info(
        "memory estimate for %d frames at %dx%d on %s: %.2f GiB (free: %s)",
        num_frames,
        width,
        height,
        device,
        need / GIB,
        "unknown" if free is None else f"{free / GIB:.2f} GiB",
    )
    if free is None or need <= free:
        return
    raise InsufficientMemoryError(
        "not enough memory on {device}: about {need:.1f} GiB needed for {frames} frames at {width}x{height}, "
        "{free:.1f} GiB free. Use fewer frames ({max_frames}, or {fps} for a video), a lower {resolution} "
        "(e.g. 392), {mode=crop} (smaller than pad), {dtype=bfloat16} (float16 on older GPUs), or a smaller "
        "{chunk_size}; or skip this check ({memory_check=False})",
        device=device,
        need=need / GIB,
        frames=num_frames,
        width=width,
        height=height,
        free=free / GIB,
    )
