"""Where and in which precision to run: one vocabulary for inference, evaluation, training and benchmarks.

`resolve_device("auto")` picks CUDA when present, else the CPU. `resolve_dtype(device, "auto")` picks bfloat16 on
Ampere or newer GPUs, float16 on older ones, and on the CPU bfloat16 where it has native bfloat16 instructions
(AVX512-BF16 or AMX), float32 otherwise. The names (`DEVICE_CHOICES`, `DTYPE_CHOICES`) import without torch, so
that command-line help stays fast; torch is imported when a function runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from vggt.errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
# Accepted spellings of each precision.
DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
# CUDA compute capability from which bfloat16 is native (Ampere).
BF16_MIN_CUDA_CAPABILITY = (8, 0)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:1` or `mps` -> a torch.device that exists on this machine."""
    import torch

    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(
            "unknown {device} {name!r}; use one of {choices} (or cuda:N)", name=name, choices=", ".join(DEVICE_CHOICES)
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("{device} cuda was asked for, but CUDA is not available here; use {device=cpu}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                "{device} {name} does not exist: {count} CUDA device(s) found",
                name=name,
                count=torch.cuda.device_count(),
            )
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise InputError("{device} mps was asked for, but Apple MPS is not available here; use {device=cpu}")
    elif device.type != "cpu":
        raise InputError(
            "unsupported {device} {name!r}; use one of {choices}", name=name, choices=", ".join(DEVICE_CHOICES)
        )
    return device


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    import torch

    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, check, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:
            continue
    return False


def dtype_from_name(name: str) -> torch.dtype:
    """`float32`/`fp32`, `bfloat16`/`bf16` or `float16`/`fp16` -> the torch dtype."""
    import torch

    key = DTYPE_ALIASES.get(str(name).strip().lower())
    if key is None:
        raise InputError("unknown {dtype} {name!r}; use one of {choices}", name=name, choices=", ".join(DTYPE_CHOICES))
    return getattr(torch, key)


def resolve_dtype(device: torch.device, name: str | torch.dtype = "auto", training: bool = False) -> torch.dtype:
    """The compute precision on `device`: `auto` or one of float32, bfloat16, float16 (aliases fp32, bf16, fp16).

    `auto` for inference: see the module docstring. `auto` for training (`training=True`): bfloat16 on GPUs that
    have it, else float32 (float16 autocast would need loss scaling, and CPU bfloat16 training is slow). float16
    on the CPU only for training, whose gradient scaler torch runs on the CPU too.
    """
    import torch

    if isinstance(name, torch.dtype):
        dtype = name
    elif str(name).strip().lower() == "auto":
        return _auto_training_dtype(device) if training else _auto_inference_dtype(device)
    else:
        dtype = dtype_from_name(name)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise InputError("unsupported {dtype} {name}; use one of {choices}", name=dtype, choices=DTYPE_CHOICES)
    if dtype == torch.float16 and device.type == "cpu" and not training:  # training scales its loss (GradScaler)
        raise InputError("float16 is for GPUs; on the CPU use {dtype=float32} or {dtype=bfloat16}")
    return dtype


def _auto_inference_dtype(device: torch.device) -> torch.dtype:
    import torch

    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if capability >= BF16_MIN_CUDA_CAPABILITY else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    return torch.float32


def _auto_training_dtype(device: torch.device) -> torch.dtype:
    import torch

    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= BF16_MIN_CUDA_CAPABILITY:
        return torch.bfloat16
    return torch.float32


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision for `dtype` below float32; a no-op for float32 or None."""
    import torch

    if dtype is None or dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
