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
from vggt.runtime.memory_model import StreamingMemory, estimate_streaming_memory
from vggt.runtime.options import StreamingOptions

logger = logging.getLogger(__name__)

GIB = 1024**3

# Margin for the allocator's fragmentation and slack (about 40 MB plus 3 MB per frame on a CPU) and what the
# model leaves out.
MEMORY_SAFETY_FACTOR = 1.25
# CUDA context, cuDNN/cuBLAS workspaces.
CUDA_FIXED_OVERHEAD_BYTES = GIB // 2


@dataclass
class MemoryEstimate:
    """A rough peak of one streaming forward pass on the device, in bytes: the weights, plus the larger of the
    trunk's and the heads' working sets (`vggt.runtime.memory_model`), plus what stays on the device throughout
    (`outputs`), plus fixed overhead."""

    weights: int
    aggregator: int
    dense_heads: int
    outputs: int
    overhead: int

    @classmethod
    def of(cls, memory: StreamingMemory, device_type: str) -> MemoryEstimate:
        """The estimate of a pass whose device memory is `memory`, with the fixed overhead of `device_type`."""
        overhead = CUDA_FIXED_OVERHEAD_BYTES if device_type == "cuda" else 0
        return cls(memory.weights, memory.trunk_phase, memory.heads_phase, outputs=0, overhead=overhead)

    @property
    def total(self) -> int:
        subtotal = self.weights + max(self.aggregator, self.dense_heads) + self.outputs
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
    streaming: StreamingOptions | None = None,
    trunk_parameters: int | None = None,
) -> MemoryEstimate:
    """Rough peak memory of `model(images)` for `num_frames` images of `height` x `width` pixels, as the streaming
    pass runs it (`streaming`, default: `StreamingOptions.auto` for the device) under autocast to `dtype`.

    The memory model is `vggt.runtime.memory_model.estimate_streaming_memory` (checked against measured CPU peaks
    in tests/test_pipeline_memory.py); the track head (tracks are not asked for by a reconstruction) is left out.
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"need at least one frame of positive size, got {num_frames} frames of {height}x{width}")
    if num_parameters is None or trunk_parameters is None:
        num_parameters, trunk_parameters = count_parameters_of_config(config)
    options = streaming or StreamingOptions.auto(device_type, max_frames_chunk_size=config.frames_chunk_size)
    low_precision = dtype in (torch.bfloat16, torch.float16)
    memory = estimate_streaming_memory(
        config,
        num_frames,
        height,
        width,
        options,
        num_parameters=num_parameters,
        trunk_parameters=trunk_parameters,
        trunk_bytes=weight_bytes,
        head_bytes=weight_bytes,
        autocast_bytes=torch.finfo(dtype).bits // 8 if low_precision and weight_bytes > 2 else None,
        discards_read_frames=device_type == "cpu",
    )
    return MemoryEstimate.of(memory, device_type)


def count_parameters_of_config(config: VGGTConfig) -> tuple[int, int]:
    """Parameters of a VGGT built from `config` without its track head, and of its aggregator alone (built on
    the meta device: no memory used)."""
    from vggt.models.vggt import VGGT

    with torch.device("meta"):
        model = VGGT(config)
    total = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("track_head."))
    return total, sum(p.numel() for p in model.aggregator.parameters())


def available_memory(device: torch.device) -> int | None:
    """Free bytes on `device` (CUDA: free device memory; CPU: available RAM), None where unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        free = _host_memory_available()
        limit = _address_space_left()
        return free if limit is None else limit if free is None else min(free, limit)
    return None


def _host_memory_available() -> int | None:
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


def _address_space_left() -> int | None:
    """What this process may still map under its address-space limit (`ulimit -v`), None without a limit."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            used = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")), 0)
    except OSError:
        used = 0
    return max(0, limit - used)


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
        "{chunk_size}, or {offload=True} on a GPU; or skip this check ({memory_check=False})",
        device=device,
        need=need / GIB,
        frames=num_frames,
        width=width,
        height=height,
        free=free / GIB,
    )


def estimate_family_memory(
    model: torch.nn.Module,
    num_frames: int,
    height: int,
    width: int,
    device_type: str = "cpu",
    streaming: StreamingOptions | None = None,
) -> MemoryEstimate:
    """Rough peak memory of a model other than VGGT (VGGT-Omega, Pi3, Pi3X), weights as they are held: of its
    reference forward pass (`vggt.runtime.memory_model.estimate_reference_forward_memory`), or of its streaming
    pass with the chunk sizes of `streaming` (`estimate_family_streaming_memory`)."""
    from vggt.runtime.memory_model import estimate_family_streaming_memory, estimate_reference_forward_memory

    parameters = list(model.parameters())
    counts = dict(num_parameters=sum(p.numel() for p in parameters), weight_bytes=parameters[0].element_size())
    if streaming is None:
        memory = estimate_reference_forward_memory(model.config, num_frames, height, width, **counts)
    else:
        memory = estimate_family_streaming_memory(model.config, num_frames, height, width, streaming, **counts)
    return MemoryEstimate.of(memory, device_type)
