"""Where and in which precision to run VGGT, and whether a run will fit in memory.

`resolve_device("auto")` picks CUDA when present, else the CPU. `resolve_dtype(device, "auto")` picks
bfloat16 on Ampere or newer GPUs, float16 on older ones, and on the CPU bfloat16 where it has native
bfloat16 instructions (AVX512-BF16 or AMX), float32 otherwise. The weights stay in float32; the
aggregator runs under autocast in the chosen precision and the heads in float32.

`estimate_inference_memory` gives a rough peak for one forward pass, and `check_memory` stops with
advice before a run that would not fit.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from vggt.models.config import VGGTConfig
from vggt.pipeline.options import DEVICE_CHOICES, DTYPE_CHOICES

logger = logging.getLogger(__name__)

GIB = 1024**3

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# CUDA compute capability from which bfloat16 is native (Ampere).
BF16_MIN_CUDA_CAPABILITY = (8, 0)

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


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:1` or `mps` -> a torch.device that exists on this machine."""
    if isinstance(name, torch.device):
        name = str(name)
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)} (or cuda:N)") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda was asked for, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device mps was asked for, but Apple MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; use one of {', '.join(DEVICE_CHOICES)}")
    return device


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for check in checks:
        fn = getattr(torch.cpu, check, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:
            continue
    return False


def resolve_dtype(device: torch.device, name: str | torch.dtype = "auto") -> torch.dtype:
    """The compute precision for `device`: `auto` or one of float32, bfloat16, float16."""
    if isinstance(name, torch.dtype):
        dtype = name
    else:
        key = name.strip().lower()
        if key == "auto":
            if device.type == "cuda":
                capability = torch.cuda.get_device_capability(device)
                return torch.bfloat16 if capability >= BF16_MIN_CUDA_CAPABILITY else torch.float16
            if device.type == "cpu":
                return torch.bfloat16 if cpu_supports_bf16() else torch.float32
            return torch.float32
        if key not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPE_CHOICES)}")
        dtype = DTYPES[key]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"unsupported dtype {dtype}; use one of {', '.join(DTYPE_CHOICES)}")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("float16 is for GPUs; on the CPU use --dtype float32 or bfloat16")
    return dtype


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision for `dtype` below float32; a no-op in float32."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


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
) -> MemoryEstimate:
    """Rough peak memory of `model(images)` for `num_frames` images of `height` x `width` pixels.

    Counts the weights, the aggregator outputs kept for the heads (in `dtype` plus a float32 copy),
    the working set of one global-attention block over all frames, one chunk of
    `config.frames_chunk_size` frames in each dense head (float32), and the float32 outputs. Attention
    itself is assumed to run without materialising the score matrix (fused scaled-dot-product kernels).
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
    chunk = num_frames if config.frames_chunk_size is None else min(config.frames_chunk_size, num_frames)
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


class InsufficientMemoryError(RuntimeError):
    """The run would not fit in memory; the message says what to change."""


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
        f"not enough memory on {device}: about {need / GIB:.1f} GiB needed for {num_frames} frames at "
        f"{width}x{height}, {free / GIB:.1f} GiB free. Use fewer frames (--max-frames, or --fps for a video), "
        "a lower --resolution (e.g. 392), --mode crop (smaller than pad), --dtype bfloat16 (float16 on older GPUs), "
        "or a smaller --chunk-size"
    )
