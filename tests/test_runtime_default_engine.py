"""`model(images)` without an engine argument: streamed for inference, the reference pass otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vggt.models.engines import registered_default_engine, resolve_engine
from vggt.runtime.engine import StreamingEngine, default_engine

REPO = Path(__file__).resolve().parents[1]


def test_the_runtime_is_the_registered_default():
    assert registered_default_engine() is default_engine


def test_inference_streams_and_everything_else_is_the_reference_pass(golden_model, golden_io):
    images = golden_io["input.images"]
    with torch.no_grad():
        assert resolve_engine("auto", golden_model, images) == StreamingEngine.auto("cpu")
        assert resolve_engine(None, golden_model, images) is None
        chosen = StreamingEngine.auto("cpu", merge_ratio=0.5)
        assert resolve_engine(chosen, golden_model, images) is chosen
    assert resolve_engine("auto", golden_model, images) is None  # autograd on: training's pass
    golden_model.train()
    try:
        with torch.no_grad():
            assert resolve_engine("auto", golden_model, images) is None
    finally:
        golden_model.eval()
    with pytest.raises(ValueError, match="'auto'"):
        resolve_engine("streaming", golden_model, images)


@torch.no_grad()
def test_the_default_gives_the_streaming_numbers(golden_model, golden_io):
    images, queries = golden_io["input.images"], golden_io["input.query_points"]
    default = golden_model(images, query_points=queries)
    streamed = golden_model(images, query_points=queries, engine=StreamingEngine.auto("cpu"))
    for key in ("pose_enc", "depth", "world_points", "track", "vis"):
        assert torch.equal(default[key], streamed[key]), key


MEASURE = """
import dataclasses, json, sys, torch
sys.path.insert(0, "benchmarks")
from memory_probe import peak_rss_mb, reset_peak_rss
from vggt.models.config import get_preset
from vggt.models.vggt import VGGT
# VGGT-1B's widths with fewer blocks, as the memory model's test: full-scale activations, a quick pass.
config = dataclasses.replace(
    get_preset("vggt-1b"), depth=4, patch_embed_depth=4, dpt_layers=(0, 1, 2, 3), enable_track=False
)
torch.manual_seed(0)
model = VGGT(config).eval()
images = torch.rand(6, 3, 224, 224)
with torch.no_grad():
    for engine in ("auto", None):  # one-time allocations (thread pools, kernels) outside the measurement
        model(images[:1], engine=engine)
    extra = {}
    for name, engine in (("default", "auto"), ("reference", None)):
        start = reset_peak_rss()
        model(images, engine=engine)
        extra[name] = peak_rss_mb() - start
print(json.dumps(extra))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak resident memory is read from /proc (Linux)")
def test_a_notebooks_model_call_keeps_the_lean_memory():
    """`with torch.no_grad(): model(images)` needs a fraction of the reference pass's working memory."""
    result = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    extra = json.loads(result.stdout.strip().splitlines()[-1])
    assert extra["default"] < 0.5 * extra["reference"], extra
