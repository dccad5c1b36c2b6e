"""The memory estimate and check of vggt.pipeline.memory."""

from __future__ import annotations

import pytest
import torch

from vggt.errors import InsufficientMemoryError
from vggt.models.config import get_preset
from vggt.pipeline.memory import MemoryEstimate, available_memory, check_memory, estimate_inference_memory


def test_memory_estimate_and_check():
    config = get_preset("vggt-1b")
    small = estimate_inference_memory(config, 8, 392, 518, torch.bfloat16)
    large = estimate_inference_memory(config, 64, 392, 518, torch.bfloat16)
    assert large.total > small.total
    assert large.aggregator > 7 * small.aggregator  # grows with the number of frames
    assert small.weights > 4 * 10**9  # about 1.2 B float32 parameters
    assert estimate_inference_memory(config, 8, 392, 518, torch.float32).total > small.total

    free = available_memory(torch.device("cpu"))
    if free is None:
        pytest.skip("free memory is unknown on this platform")
    fits = MemoryEstimate(weights=1, aggregator=0, dense_heads=0, outputs=0, overhead=0)
    check_memory(fits, torch.device("cpu"), 1, 14, 14)
    too_big = MemoryEstimate(weights=2 * free, aggregator=0, dense_heads=0, outputs=0, overhead=0)
    with pytest.raises(InsufficientMemoryError, match="fewer frames"):
        check_memory(too_big, torch.device("cpu"), 500, 392, 518)
