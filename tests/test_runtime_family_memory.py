"""The memory model of the family models' streaming pass against measured CPU peaks, and the streaming pass's peak
against the reference forward pass's."""

from __future__ import annotations

import functools
import sys

import pytest
import torch

# The estimate of a whole run (weights included) may be off from the measured peak by at most this factor.
ESTIMATE_FACTOR = 1.5

FRAMES, SIDE = 6, 224


@functools.cache
def _measure(family: str, mode: str) -> dict:
    """One run through the pipeline in a fresh process, the streaming pass ("stream") or the reference pass ("plain")
    of the family at released widths with fewer blocks (`benchmarks/family_memory.py`); each measured once per
    session: the tests share them."""
    from benchmarks.family_memory import measure

    return measure(family, mode, FRAMES, SIDE)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak resident memory is read from /proc")


@linux_only
@pytest.mark.parametrize("family", ["vggt-omega", "pi3x"])  # Pi3X runs the whole of Pi3's estimate, and more
def test_streaming_estimate_is_within_a_factor_of_the_measured_cpu_peak(family):
    measured = _measure(family, "stream")
    ratio = measured["estimate_mb"] / measured["peak_mb"]
    assert 1 / ESTIMATE_FACTOR <= ratio <= ESTIMATE_FACTOR, measured


@linux_only
def test_the_streaming_pass_needs_less_memory_than_the_reference_pass():
    """Pi3X at 1024 wide with 6 frames of 224 x 224: its convolutional heads over every frame at once dominate the
    reference pass; the streaming pass runs them one frame at a time (measured: about 140 MB against 400 MB)."""
    plain, stream = _measure("pi3x", "plain"), _measure("pi3x", "stream")
    assert stream["pass_mb"] < 0.6 * plain["pass_mb"], (plain, stream)
    assert stream["estimate_mb"] < plain["estimate_mb"]


def test_streaming_estimate_of_the_released_sizes():
    """The released models' streaming estimate (built on the meta device): below the reference pass's, growing at
    most linearly with the frames, and smaller with smaller chunks."""
    from vggt.models.pi3 import Pi3
    from vggt.models.pi3x import Pi3X
    from vggt.models.vggt_omega import VGGTOmega
    from vggt.pipeline.memory import estimate_family_memory
    from vggt.runtime.options import StreamingOptions

    gpu, small_chunks = StreamingOptions.auto("cuda"), StreamingOptions(1, 4096, 2, 256)
    for model_class in (Pi3, Pi3X, VGGTOmega):
        with torch.device("meta"):
            model = model_class()
        small, large = (estimate_family_memory(model, frames, 392, 518, "cuda", gpu) for frames in (8, 64))
        reference = estimate_family_memory(model, 64, 392, 518, "cuda")
        assert large.total < reference.total
        assert small.weights == large.weights == reference.weights

        def working(estimate):
            return max(estimate.aggregator, estimate.dense_heads)

        assert working(small) < working(large) <= 8 * working(small) * 1.01
        assert working(estimate_family_memory(model, 64, 392, 518, "cuda", small_chunks)) < working(large)
