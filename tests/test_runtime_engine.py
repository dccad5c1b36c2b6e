"""The streaming engine gives the reference forward's numbers at any chunk size and offload, chosen by argument."""

from __future__ import annotations

import mmap

import pytest
import torch
from conftest import assert_close_golden

from vggt.models.vggt import VGGT
from vggt.runtime import engine as engine_module
from vggt.runtime import host_memory, progress
from vggt.runtime.engine import StreamingEngine, run_frame_heads
from vggt.runtime.memory_model import estimate_streaming_memory
from vggt.runtime.options import StreamingOptions
from vggt.runtime.trunk import run_trunk

FORWARD_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf")

# bf16 autocast against float32 on the golden inputs: the largest difference allowed, as a fraction of the
# largest float32 magnitude of each output (measured: 2e-3 for pose encodings, below 5e-4 for the dense maps),
# in pixels for the tracks (measured 0.15 px on 70 x 98 images) and absolute for visibility and confidence
# probabilities (measured 0.013).
BF16_RELATIVE_BOUND = 1e-2
BF16_TRACK_BOUND_PX = 0.5
BF16_PROBABILITY_BOUND = 0.05


def _options(chunk: int | None, offload: bool) -> StreamingOptions:
    return StreamingOptions(chunk, chunk, chunk, chunk, offload=offload)


def _engine(chunk: int | None, offload: bool) -> StreamingEngine:
    return StreamingEngine(_options(chunk, offload))


@pytest.mark.parametrize("offload", [False, True], ids=["on-device", "offload"])
@pytest.mark.parametrize("chunk", [1, 3, None], ids=["chunks-of-1", "chunks-of-3", "all-at-once"])
@torch.no_grad()
def test_streaming_forward_matches_golden(golden_model, golden_io, tolerances, chunk, offload):
    out = golden_model(
        golden_io["input.images"], query_points=golden_io["input.query_points"], engine=_engine(chunk, offload)
    )
    for key in FORWARD_KEYS:
        assert_close_golden(f"forward.{key}", out[key], golden_io[f"forward.{key}"], tolerances)
    for i, pose_enc in enumerate(out["pose_enc_list"]):
        assert_close_golden(f"camera_head.iter{i}", pose_enc, golden_io[f"camera_head.iter{i}"], tolerances)
    assert torch.equal(out["images"], golden_io["input.images"])


@torch.no_grad()
def test_streaming_aggregator_stores_every_layer_of_the_full_pass(golden_model, golden_io, tolerances):
    images = golden_io["input.images"]
    kept = run_trunk(golden_model.aggregator, images, _options(2, False), range(4))
    assert golden_model.aggregator.patch_start_idx == 5
    for i, stored in enumerate(kept.as_list()):
        assert_close_golden(f"aggregator.layer{i}", stored, golden_io[f"aggregator.layer{i}"], tolerances)


@pytest.mark.parametrize("keep", [(0, 2), (1,), (3,)])
@torch.no_grad()
def test_buffers_reused_after_a_kept_layer_never_write_over_it(golden_model, golden_io, tolerances, keep):
    """Kept layers with unkept ones between and after them: the trunk's pool reuses buffers around the kept ones."""
    kept = run_trunk(golden_model.aggregator, golden_io["input.images"], _options(2, False), keep)
    stored = kept.as_list()
    for i in range(4):
        if i not in keep:
            assert stored[i] is None
            continue
        assert_close_golden(f"aggregator.layer{i}", stored[i], golden_io[f"aggregator.layer{i}"], tolerances)


@torch.no_grad()
def test_frames_the_heads_have_read_are_discarded_without_changing_a_number(
    golden_model, golden_io, tolerances, monkeypatch
):
    # Every scene buffer mapped (the golden scene is far below the size at which they are), so that the
    # dense heads' frame-by-frame discarding of the kept outputs really gives pages back.
    monkeypatch.setattr(host_memory, "MIN_MAPPED_BYTES", 0)
    images, queries = golden_io["input.images"], golden_io["input.query_points"]
    options = _options(1, False)
    kept = run_trunk(golden_model.aggregator, images, options, range(4))
    patch_start_idx = golden_model.aggregator.patch_start_idx
    out = run_frame_heads(golden_model, kept, images.shape, patch_start_idx, ["depth", "point"], False, options)
    for key in ("depth", "depth_conf", "world_points", "world_points_conf"):
        assert_close_golden(f"forward.{key}", out[key], golden_io[f"forward.{key}"], tolerances)
    read = kept.layers[3][1][0]  # every frame of the first sample: read by every head, so discarded
    assert read.numel() * read.element_size() > 2 * mmap.PAGESIZE
    assert not read.flatten()[: mmap.PAGESIZE // read.element_size()].any(), "nothing was discarded"
    # and the whole model, so discarding, gives the golden numbers
    full = golden_model(images, query_points=queries, engine=StreamingEngine(options))
    for key in FORWARD_KEYS:
        assert_close_golden(f"forward.{key}", full[key], golden_io[f"forward.{key}"], tolerances)


def test_the_engine_is_an_argument_and_grad_mode_picks_nothing(golden_model, golden_io, monkeypatch):
    """An engine named (None for the reference pass) runs in any grad mode; the default ("auto") is in
    test_runtime_default_engine.py."""
    calls = []
    original = engine_module.run_trunk

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "run_trunk", counting)
    images = golden_io["input.images"][:1]
    with torch.no_grad():
        reference = golden_model(images, engine=None)
    with torch.enable_grad():
        golden_model(images, engine=None)
    assert not calls, "engine=None runs the reference forward, whatever the grad mode"
    with torch.enable_grad():
        streamed = golden_model(images, engine=StreamingEngine(_options(2, False)))
    assert len(calls) == 1, "the engine passed runs, whatever the grad mode"
    assert not streamed["depth"].requires_grad, "the streaming engine computes no gradients"
    torch.testing.assert_close(streamed["depth"], reference["depth"], rtol=1e-5, atol=1e-5)


class _CountingSink:
    """What a progress bar offers the engine: a writable total and update(n)."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0

    def update(self, steps: int) -> None:
        self.done += steps


@torch.no_grad()
def test_progress_counts_every_announced_step_once(golden_model, golden_io):
    images, queries = golden_io["input.images"], golden_io["input.query_points"]  # 3 frames
    sink = _CountingSink()
    with progress.reporting_to(sink):
        golden_model(images, query_points=queries, engine=StreamingEngine(_options(1, False)))
    # 3 patch-encoder chunks of 1 frame (1-token chunks hold no whole frame), 2 blocks per layer, the camera
    # head, 3 frame chunks of the per-frame heads, the tracker
    assert sink.total == 3 + 2 * golden_model.config.depth + 1 + 3 + 1
    assert sink.done == sink.total
    golden_model(images, engine=StreamingEngine(_options(1, False)))
    assert sink.done == sink.total, "outside the context nothing is reported"


def test_engine_options_must_be_streaming_options():
    with pytest.raises(ValueError, match="StreamingOptions"):
        StreamingEngine(options={"frames_chunk_size": 2})


@pytest.mark.parametrize("field", ["frames_chunk_size", "tokens_chunk_size", "heads_chunk_size", "queries_chunk_size"])
def test_streaming_options_reject_non_positive_chunks(field):
    with pytest.raises(ValueError, match=field):
        StreamingOptions(**{field: 0})


def test_automatic_options_follow_the_device_and_the_cap():
    cpu = StreamingOptions.auto("cpu")
    cuda = StreamingOptions.auto("cuda")
    assert cpu.frames_chunk_size < cuda.frames_chunk_size
    assert StreamingOptions.auto("cuda", max_frames_chunk_size=2).frames_chunk_size == 2
    assert StreamingOptions.auto("cpu", offload=True).offload


@torch.no_grad()
def test_bf16_autocast_stays_within_the_stated_bound_of_float32(golden_model, golden_io):
    images, queries = golden_io["input.images"], golden_io["input.query_points"]
    options = StreamingOptions(2, 50, 2, 3)
    reference = golden_model(images, query_points=queries, engine=StreamingEngine(options))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = golden_model(images, query_points=queries, engine=StreamingEngine(options))
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        assert low[key].dtype == torch.float32, f"{key}: the heads run in float32 under autocast"
        error = (low[key] - reference[key]).abs().max()
        assert error <= BF16_RELATIVE_BOUND * reference[key].abs().max(), f"{key}: bf16 error {error:.3g}"
    assert (low["track"] - reference["track"]).abs().max() <= BF16_TRACK_BOUND_PX
    for key in ("vis", "conf"):
        assert (low[key] - reference[key]).abs().max() <= BF16_PROBABILITY_BOUND
    # The pass really ran in bf16: the numbers moved.
    assert not torch.equal(low["pose_enc"], reference["pose_enc"])


def test_memory_model_projects_the_gpu_targets():
    from vggt.models.config import get_preset

    config = get_preset("vggt-1b")
    with torch.device("meta"):
        model = VGGT(config, enable_track=False)
    sizes = dict(
        num_parameters=sum(p.numel() for p in model.parameters()),
        trunk_parameters=sum(p.numel() for p in model.aggregator.parameters()),
        autocast_bytes=2,
        images_on_device=False,
    )
    offload = StreamingOptions.auto("cuda", offload=True)
    paper_job = estimate_streaming_memory(config, 200, 518, 518, offload, **sizes)
    assert paper_job.device_peak < 12e9, paper_job.summary()
    thousands = estimate_streaming_memory(config, 2000, 518, 518, offload, **sizes)
    assert thousands.device_peak < 80e9, thousands.summary()
    on_device = estimate_streaming_memory(config, 200, 518, 518, StreamingOptions.auto("cuda"), **sizes)
    assert on_device.device_peak > paper_job.device_peak and on_device.host == 0
