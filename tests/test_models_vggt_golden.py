"""Golden equivalence: the tiny model with the reference's weights reproduces the reference's outputs."""

from __future__ import annotations

import torch
from conftest import assert_close_golden

from vggt.models.aggregator import IMAGENET_MEAN, IMAGENET_STD


@torch.no_grad()
def test_patch_tokens(golden_model, golden_io, tolerances):
    images = golden_io["input.images"]
    B, S, _, H, W = images.shape
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    tokens = golden_model.aggregator.patch_embed(((images - mean) / std).reshape(B * S, 3, H, W))
    assert_close_golden(
        "patch_embed.x_norm_patchtokens", tokens, golden_io["patch_embed.x_norm_patchtokens"], tolerances
    )


@torch.no_grad()
def test_aggregator_layers(golden_model, golden_io, tolerances):
    outputs, patch_start_idx = golden_model.aggregator(golden_io["input.images"], keep_layers=range(4))
    assert patch_start_idx == 5
    for i in range(4):
        assert_close_golden(f"aggregator.layer{i}", outputs[i], golden_io[f"aggregator.layer{i}"], tolerances)


@torch.no_grad()
def test_full_forward(golden_model, golden_io, tolerances):
    out = golden_model(golden_io["input.images"], query_points=golden_io["input.query_points"])
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf"):
        assert_close_golden(f"forward.{key}", out[key], golden_io[f"forward.{key}"], tolerances)
    for i, pose_enc in enumerate(out["pose_enc_list"]):
        assert_close_golden(f"camera_head.iter{i}", pose_enc, golden_io[f"camera_head.iter{i}"], tolerances)
    assert torch.equal(out["images"], golden_io["input.images"])


@torch.no_grad()
def test_unbatched_input_and_chunking_agree(golden_model, golden_io):
    images = golden_io["input.images"][1]
    full = golden_model(images)
    assert full["depth"].shape == (1, 3, 70, 98, 1)
    golden_model.config.frames_chunk_size = 1
    try:
        chunked = golden_model(images)
    finally:
        golden_model.config.frames_chunk_size = 8
    torch.testing.assert_close(chunked["world_points"], full["world_points"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked["depth"], full["depth"], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_the_aggregator_keeps_the_layers_asked_and_all_by_default(golden_model, golden_io):
    outputs, _ = golden_model.aggregator(golden_io["input.images"], keep_layers=[3])
    assert [o is not None for o in outputs] == [False, False, False, True]
    outputs, _ = golden_model.aggregator(golden_io["input.images"])
    assert [o is not None for o in outputs] == [True] * 4, "called directly it keeps every layer, as the reference"
