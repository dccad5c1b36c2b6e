"""The memory estimate and check of vggt.pipeline.memory, and the estimate against a measured CPU peak."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from vggt.errors import InsufficientMemoryError
from vggt.models.config import get_preset
from vggt.pipeline.memory import MemoryEstimate, available_memory, check_memory, estimate_inference_memory

# The estimate of a whole run (weights included) may be off from the measured peak by at most this factor.
ESTIMATE_FACTOR = 1.5


def test_memory_estimate_and_check():
    config = get_preset("vggt-1b")
    small = estimate_inference_memory(config, 8, 392, 518, torch.bfloat16)
    middle = estimate_inference_memory(config, 16, 392, 518, torch.bfloat16)
    large = estimate_inference_memory(config, 64, 392, 518, torch.bfloat16)
    assert large.total > middle.total > small.total
    # The trunk's working set grows linearly with the frames (kept outputs, token stream, keys and values).
    assert large.aggregator - small.aggregator == pytest.approx(7 * (middle.aggregator - small.aggregator), rel=0.05)
    assert small.weights > 4 * 10**9  # about 1.2 B float32 parameters
    # bf16 autocast caches a bf16 copy of the trunk's weights, but every extra frame costs less than in float32.
    float32_small = estimate_inference_memory(config, 8, 392, 518, torch.float32)
    float32_large = estimate_inference_memory(config, 64, 392, 518, torch.float32)
    assert large.total - small.total < float32_large.total - float32_small.total

    free = available_memory(torch.device("cpu"))
    if free is None:
        pytest.skip("free memory is unknown on this platform")
    fits = MemoryEstimate(weights=1, aggregator=0, dense_heads=0, outputs=0, overhead=0)
    check_memory(fits, torch.device("cpu"), 1, 14, 14)
    too_big = MemoryEstimate(weights=2 * free, aggregator=0, dense_heads=0, outputs=0, overhead=0)
    with pytest.raises(InsufficientMemoryError, match="fewer frames"):
        check_memory(too_big, torch.device("cpu"), 500, 392, 518)


MEASURE = """
import dataclasses, json, sys, torch
from vggt.models.config import get_preset
from benchmarks.memory_probe import peak_rss_mb, rss_mb
from vggt.models.vggt import VGGT
from vggt.pipeline.inference import InferenceOptions, run_inference
from vggt.pipeline.memory import estimate_inference_memory
frames, size = int(sys.argv[1]), int(sys.argv[2])
# VGGT-1B's widths with fewer blocks: the memory model's terms at full scale, a quick forward on a CPU.
config = dataclasses.replace(
    get_preset("vggt-1b"), depth=4, patch_embed_depth=4, dpt_layers=(0, 1, 2, 3), enable_track=False
)
torch.manual_seed(0)
model = VGGT(config).eval()
images = torch.rand(frames, 3, size, size)
start = rss_mb()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident set
run_inference(model, images, InferenceOptions(memory_check=False))
estimate = estimate_inference_memory(config, frames, size, size, torch.float32)
print(json.dumps({"peak_mb": peak_rss_mb(), "start_mb": start, "estimate_mb": estimate.total / 2**20}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak resident memory is read from /proc (Linux)")
@pytest.mark.parametrize("frames, size", [(4, 168), (12, 196)])
def test_estimate_is_within_a_factor_of_the_measured_cpu_peak(frames, size):
    result = subprocess.run([sys.executable, "-c", MEASURE, str(frames), str(size)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    # The process's peak holds the weights and the pass, as the estimate does (and the interpreter and libraries).
    ratio = measured["estimate_mb"] / measured["peak_mb"]
    assert 1 / ESTIMATE_FACTOR <= ratio <= ESTIMATE_FACTOR, measured


# VGGT-Omega, Pi3 and Pi3X at their released widths with fewer blocks, their reference forward pass.
MEASURE_FAMILY = """
import json, sys, torch
from benchmarks.memory_probe import peak_rss_mb
from vggt.models import pi3, pi3x, vggt_omega
from vggt.pipeline.family import family_forward, family_geometry
from vggt.pipeline.memory import estimate_family_memory
shallow = dict(encoder_depth=2, decoder_depth=4, head_depth=1)
models = {
    "vggt-omega": lambda: vggt_omega.VGGTOmega(vggt_omega.OmegaConfig(
        encoder_depth=2, depth=4, register_attention_blocks=(1,), dense_layers=(0, 1, 2, 3), camera_trunk_depth=1)),
    "pi3": lambda: pi3.Pi3(pi3.Pi3Config(**shallow)),
    "pi3x": lambda: pi3x.Pi3X(pi3x.Pi3XConfig(**shallow, metric_depth=1)),
}
torch.manual_seed(0)
model = models[sys.argv[1]]().eval()
num_frames, side = 8, 280
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident set
with torch.inference_mode():  # the reference pass (the pipeline streams: tests/test_runtime_family_memory.py)
    family_geometry(family_forward(model, torch.rand(1, num_frames, 3, side, side)), (side, side))
estimate = estimate_family_memory(model, num_frames, side, side)
print(json.dumps({"peak_mb": peak_rss_mb(), "estimate_mb": estimate.total / 2**20}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak resident memory is read from /proc (Linux)")
@pytest.mark.parametrize("family", ["vggt-omega", "pi3", "pi3x"])
def test_family_estimate_is_within_a_factor_of_the_measured_cpu_peak(family):
    result = subprocess.run([sys.executable, "-c", MEASURE_FAMILY, family], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    ratio = measured["estimate_mb"] / measured["peak_mb"]
    assert 1 / ESTIMATE_FACTOR <= ratio <= ESTIMATE_FACTOR, measured


def test_family_estimate_of_the_released_sizes():
    """The estimate of the released Pi3X and VGGT-Omega (built on the meta device: no memory used): the weights
    as counted, and a pass that grows with the frames at most linearly (global attention over all of them is
    computed in blocks, never as a full matrix)."""
    from vggt.models.pi3x import Pi3X
    from vggt.models.vggt_omega import VGGTOmega
    from vggt.pipeline.memory import estimate_family_memory

    for model_class in (Pi3X, VGGTOmega):
        with torch.device("meta"):
            model = model_class()
        parameters = sum(p.numel() for p in model.parameters())
        small, middle, large = (estimate_family_memory(model, frames, 392, 518) for frames in (8, 16, 64))
        assert small.weights == 4 * parameters > 4 * 10**9
        assert small.total < middle.total < large.total

        def working(estimate):
            return max(estimate.aggregator, estimate.dense_heads)

        assert working(large) <= 8 * working(small) * 1.01
