"""The streaming pass of the family models (Pi3, Pi3X, VGGT-Omega) gives the numbers of `model(images)` at chunk
sizes that split frames, tokens and attention heads, with and without offload; the fast mode changes them a little."""

from __future__ import annotations

import pytest
import torch

from vggt.models import create_model
from vggt.runtime.engine import StreamingEngine
from vggt.runtime.omega_engine import run_omega
from vggt.runtime.options import StreamingOptions
from vggt.runtime.pi3_engine import run_pi3

# float32 on the CPU: the streaming pass reorders sums (token chunks, head groups, oneDNN), nothing more.
RELATIVE_TOLERANCE = 1e-5
FRAMES = 5

# (frames, tokens, heads, queries) chunks: tokens chunks that cut frames apart, one head per group, and all at once.
SPLITTING = [(2, 7, 1, 4), (1, 30, 1, 4), (None, None, None, None)]


def _assert_same(out: dict, ref: dict, keys) -> None:
    for key in keys:
        scale = ref[key].abs().max().clamp(min=1e-12)
        error = ((out[key].float() - ref[key].float()).abs().max() / scale).item()
        assert error <= RELATIVE_TOLERANCE, (key, error)


@pytest.fixture(scope="module")
def pi3_models():
    torch.manual_seed(0)
    return {name: create_model(name).eval() for name in ("pi3-tiny", "pi3x-tiny")}


def _scene(height: int = 56, width: int = 70) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(1, FRAMES, 3, height, width, generator=generator)
    focal = torch.tensor([[60.0, 0, width / 2], [0, 60.0, height / 2], [0, 0, 1]])
    depth = torch.rand(1, FRAMES, height, width, generator=generator) + 0.5
    depth[:, 1] = 0  # a frame without known depth
    depth[:, 2, :10] = 0
    return {"images": images, "intrinsics": focal.expand(1, FRAMES, 3, 3), "depth": depth}


@pytest.mark.parametrize("offload", [False, True], ids=["on-device", "offload"])
@pytest.mark.parametrize("chunks", SPLITTING, ids=["split-tokens", "frame-by-frame", "all-at-once"])
@pytest.mark.parametrize("name", ["pi3-tiny", "pi3x-tiny"])
@torch.no_grad()
def test_pi3_streaming_matches_the_forward(pi3_models, name, chunks, offload):
    model, scene = pi3_models[name], _scene()
    engine = StreamingEngine(StreamingOptions(*chunks, offload=offload))
    ref = model(scene["images"])
    out = run_pi3(model, scene["images"], engine)
    assert set(out) == set(ref)
    _assert_same(out, ref, ref)


@pytest.mark.parametrize("given", [("intrinsics",), ("depth",), ("intrinsics", "depth")])
@torch.no_grad()
def test_pi3x_streaming_with_conditioning_matches_the_forward(pi3_models, given):
    model, scene = pi3_models["pi3x-tiny"], _scene()
    conditioning = {name: scene[name] for name in given}
    ref = model(scene["images"], **conditioning)
    plain = model(scene["images"])
    assert not torch.allclose(ref["points"], plain["points"])  # the conditioning does enter the network
    for chunks in SPLITTING[:2]:
        out = run_pi3(model, scene["images"], StreamingEngine(StreamingOptions(*chunks)), **conditioning)
        _assert_same(out, ref, ref)


@torch.no_grad()
def test_pi3_fast_mode_changes_the_numbers_a_little(pi3_models):
    model, images = pi3_models["pi3-tiny"], _scene(112, 112)["images"]
    ref = model(images)
    exact = run_pi3(model, images, StreamingEngine(StreamingOptions(2, 50, 1, 4), merge_ratio=0.0))
    _assert_same(exact, ref, ref)
    fast = run_pi3(model, images, StreamingEngine(StreamingOptions(2, 50, 1, 4), merge_ratio=0.5))
    difference = (fast["local_points"] - ref["local_points"]).abs().max() / ref["local_points"].abs().max()
    assert 0 < difference < 0.5


@pytest.fixture(scope="module")
def omega_models():
    torch.manual_seed(0)
    return {name: create_model(name).eval() for name in ("vggt-omega-tiny", "vggt-omega-text-tiny")}


@pytest.mark.parametrize("offload", [False, True], ids=["on-device", "offload"])
@pytest.mark.parametrize("chunks", SPLITTING, ids=["split-tokens", "frame-by-frame", "all-at-once"])
@pytest.mark.parametrize("name", ["vggt-omega-tiny", "vggt-omega-text-tiny"])
@torch.no_grad()
def test_omega_streaming_matches_the_forward(omega_models, name, chunks, offload):
    model = omega_models[name]
    images = torch.rand(1, FRAMES, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    assert model.config.register_attention_blocks  # both kinds of inter-frame block are streamed
    ref = model(images)
    out = run_omega(model, images, StreamingEngine(StreamingOptions(*chunks, offload=offload)))
    assert set(out) == set(ref)
    _assert_same(out, ref, ref)


@torch.no_grad()
def test_omega_fast_mode_changes_the_numbers_a_little(omega_models):
    model = omega_models["vggt-omega-tiny"]
    images = torch.rand(1, FRAMES, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    ref = model(images)
    fast = run_omega(model, images, StreamingEngine(StreamingOptions(2, 50, 1, 4), merge_ratio=0.5))
    difference = (fast["depth"] - ref["depth"]).abs().max() / ref["depth"].abs().max()
    assert 0 < difference < 0.5


@torch.no_grad()
def test_the_pipeline_streams_a_family_model_with_the_engine_it_is_given(pi3_models, omega_models):
    """`run_inference` with an engine: the streaming pass's predictions equal the reference pass's (merge ratio 0),
    and the fast mode moves them a little; Pi3X's conditioning reaches the streaming pass."""
    from vggt.pipeline.family import conditioning_inputs
    from vggt.pipeline.inference import InferenceOptions, run_inference

    images = torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(4))
    exact = StreamingEngine(StreamingOptions(2, 100, 1, 4))
    fast = StreamingEngine(StreamingOptions(2, 100, 1, 4), merge_ratio=0.5)
    for model in (pi3_models["pi3x-tiny"], omega_models["vggt-omega-tiny"]):
        ref = run_inference(model, images, InferenceOptions(memory_check=False))
        out = run_inference(model, images, InferenceOptions(engine=exact))
        for key in ("extrinsics", "depth", "world_points", "world_points_conf"):
            torch.testing.assert_close(
                torch.from_numpy(getattr(out, key)), torch.from_numpy(getattr(ref, key)), rtol=1e-4, atol=1e-4
            )
        moved = run_inference(model, images, InferenceOptions(engine=fast))
        change = abs(moved.world_points - ref.world_points).max() / abs(ref.world_points).max()
        assert 10 * RELATIVE_TOLERANCE < change < 0.5
    known = conditioning_inputs(None, torch.rand(4, 112, 112) + 1.0, (112, 112))
    model = pi3_models["pi3x-tiny"]
    ref = run_inference(model, images, InferenceOptions(memory_check=False), conditioning=known)
    out = run_inference(model, images, InferenceOptions(engine=exact), conditioning=known)
    torch.testing.assert_close(torch.from_numpy(out.depth), torch.from_numpy(ref.depth), rtol=1e-4, atol=1e-4)


class _CountingSink:
    def __init__(self) -> None:
        self.total, self.done = 0, 0

    def update(self, steps: int) -> None:
        self.done += steps


@torch.no_grad()
def test_progress_counts_every_announced_step_once(pi3_models, omega_models):
    from vggt.runtime import progress

    images = _scene()["images"]
    engine = StreamingEngine(StreamingOptions(2, 7, 1, 4))
    for run in (
        lambda: run_pi3(pi3_models["pi3x-tiny"], images, engine),
        lambda: run_omega(omega_models["vggt-omega-tiny"], torch.rand(1, FRAMES, 3, 64, 48), engine),
    ):
        sink = _CountingSink()
        with progress.reporting_to(sink):
            run()
        assert sink.done == sink.total > 0
