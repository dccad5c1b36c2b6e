"""Device and precision choice of vggt.utils.device."""

from __future__ import annotations

import pytest
import torch

from vggt.utils.device import cpu_supports_bf16, resolve_device, resolve_dtype


def test_device_and_dtype_selection():
    cpu = resolve_device("cpu")
    assert resolve_dtype(cpu, "auto") == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)
    assert resolve_dtype(cpu, "float32") == torch.float32
    assert resolve_dtype(cpu, "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="float16 is for GPUs"):
        resolve_dtype(cpu, "float16")
    assert resolve_dtype(cpu, "float16", training=True) == torch.float16  # training scales its loss
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype(cpu, "int8")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
