"""The 1B model's state dict is exactly the released checkpoint's manifest."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vggt.models.config import PRESETS, VGGTConfig, get_preset
from vggt.models.vggt import VGGT

RELEASED_TENSORS = 1797
RELEASED_PARAMETERS = 1_256_537_516


def _meta_model(**kwargs) -> VGGT:
    with torch.device("meta"):
        return VGGT(**kwargs)


def test_vggt1b_state_dict_equals_manifest(shared_dir):
    rows = (shared_dir / "reference" / "vggt1b_state_dict.tsv").read_text().strip().splitlines()[1:]
    manifest = {}
    for row in rows:
        name, shape, dtype = row.split("\t")
        manifest[name] = (tuple(int(s) for s in shape.split("x")), dtype)
    state = _meta_model().state_dict()
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}
    assert list(ours) == list(manifest), "key order differs from the released checkpoint"
    assert ours == manifest
    assert len(ours) == RELEASED_TENSORS
    assert sum(v.numel() for v in state.values()) == RELEASED_PARAMETERS


def test_reference_constructor_keywords():
    model = _meta_model(img_size=518, patch_size=14, embed_dim=1024, enable_track=False, enable_point=False)
    assert model.track_head is None and model.point_head is None
    assert model.depth_head is not None and model.camera_head is not None
    assert not any(k.startswith(("track_head.", "point_head.")) for k in model.state_dict())
    with pytest.raises(TypeError, match="unexpected keyword"):
        VGGT(image_size=518)


def test_tiny_preset_matches_golden_config(golden_config, golden_state_dict):
    cfg = golden_config["config"]
    tiny = get_preset("tiny")
    assert tiny.embed_dim == cfg["embed_dim"] and tiny.depth == cfg["aggregator"]["depth"]
    assert tiny.patch_embed_depth == cfg["patch_embed"]["depth"]
    assert list(tiny.dpt_out_channels) == cfg["dpt"]["out_channels"]
    assert list(tiny.dpt_layers) == cfg["dpt"]["intermediate_layer_idx"]
    assert tiny.track_corr_levels == cfg["track_head"]["corr_levels"]
    assert tiny.patch_start_idx == golden_config["patch_start_idx"]
    model = VGGT.from_preset("tiny")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v.shape) for k, v in golden_state_dict.items()
    }


def test_config_round_trip_and_validation():
    for name in PRESETS:
        cfg = get_preset(name)
        assert VGGTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown VGGT config keys"):
        VGGTConfig.from_dict({"embed_dims": 3})
    with pytest.raises(ValueError, match="Unknown preset"):
        get_preset("vggt-2b")
    with pytest.raises(ValueError, match="dpt_layers"):
        dataclasses.replace(get_preset("tiny"), dpt_layers=(0, 1, 2, 9))


def test_layers_kept_at_inference():
    assert get_preset("vggt-1b").layers_needed() == [4, 11, 17, 23]
    assert dataclasses.replace(
        get_preset("vggt-1b"), enable_depth=False, enable_point=False, enable_track=False
    ).layers_needed() == [23]
