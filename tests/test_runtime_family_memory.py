"""The memory model of the family models' streaming pass against measured CPU peaks, and the streaming pass's peak
against the reference forward pass's."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest
import torch

# The estimate of a whole run (weights included) may be off from the measured peak by at most this factor.
ESTIMATE_FACTOR = 1.5

# VGGT-Omega, Pi3 and Pi3X at their released widths with fewer blocks, through the pipeline (`run_inference`), with
# the automatic CPU streaming engine ("stream") or the reference forward pass ("plain").
MEASURE = """
import json, sys, torch
from benchmarks.memory_probe import peak_rss_mb, rss_mb
from vggt.models import pi3, pi3x, vggt_omega
from vggt.pipeline.inference import InferenceOptions, run_inference
from vggt.pipeline.memory import estimate_family_memory
from vggt.runtime.engine import StreamingEngine
shallow = dict(encoder_depth=2, decoder_depth=4, head_depth=1)
models = {
    "vggt-omega": lambda: vggt_omega.VGGTOmega(vggt_omega.OmegaConfig(
        encoder_depth=2, depth=4, register_attention_blocks=(1,), dense_layers=(0, 1, 2, 3), camera_trunk_depth=1)),
    "pi3": lambda: pi3.Pi3(pi3.Pi3Config(**shallow)),
    "pi3x": lambda: pi3x.Pi3X(pi3x.Pi3XConfig(**shallow, metric_depth=1)),
}
family, mode, num_frames, side = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = models[family]().eval()
engine = StreamingEngine.auto("cpu") if mode == "stream" else None
images = torch.rand(num_frames, 3, side, side)
start = rss_mb()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident set
run_inference(model, images, InferenceOptions(memory_check=False, engine=engine))
estimate = estimate_family_memory(model, num_frames, side, side, "cpu", None if engine is None else engine.options)
print(json.dumps({"peak_mb": peak_rss_mb(), "start_mb": start, "estimate_mb": estimate.total / 2**20}))
"""
FRAMES, SIDE = 6, 224


@functools.cache
def _measure(family: str, mode: str) -> dict:
    """One run in a fresh process (each measured once per session: the tests share them)."""
    args = [sys.executable, "-c", MEASURE, family, mode, str(FRAMES), str(SIDE)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak resident memory is read from /proc")


@linux_only
@pytest.mark.parametrize("family", ["vggt-omega", "pi3", "pi3x"])
def test_streaming_estimate_is_within_a_factor_of_the_measured_cpu_peak(family):
    measured = _measure(family, "stream")
    ratio = measured["estimate_mb"] / measured["peak_mb"]
    assert 1 / ESTIMATE_FACTOR <= ratio <= ESTIMATE_FACTOR, measured


@linux_only
def test_the_streaming_pass_needs_less_memory_than_the_reference_pass():
    """Pi3X at 1024 wide with 6 frames of 224 x 224: its convolutional heads over every frame at once dominate the
    reference pass; the streaming pass runs them one frame at a time (measured: about 140 MB against 400 MB)."""
    plain, stream = _measure("pi3x", "plain"), _measure("pi3x", "stream")
    plain_pass, stream_pass = plain["peak_mb"] - plain["start_mb"], stream["peak_mb"] - stream["start_mb"]
    assert stream_pass < 0.6 * plain_pass, (plain, stream)
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
