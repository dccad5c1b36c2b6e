"""VGGT-Omega reproduces facebookresearch/vggt-omega: golden outputs of the reference on its small
configuration, and the key manifest of both released checkpoints."""

from __future__ import annotations

import pytest
import torch
from family_goldens import assert_matches_golden, golden_io, golden_weights, manifest, released_manifest

from vggt.models.family_outputs import to_geometry
from vggt.models.registry import create_model
from vggt.models.vggt_omega import OmegaConfig, VGGTOmega

PRESETS = {"vggt-omega-tiny": False, "vggt-omega-text-tiny": True}


@pytest.mark.parametrize("preset", PRESETS)
def test_reproduces_reference_outputs(preset):
    io = golden_io(preset)
    model = create_model(preset, checkpoint=golden_weights(preset))
    with torch.no_grad():
        outputs = model(io["input.images"])
    keys = ["pose_enc", "depth", "depth_conf", "camera_and_register_tokens"]
    if PRESETS[preset]:
        keys += ["text_alignment_embedding", "text_alignment_token"]
    assert_matches_golden(outputs, io, keys)


def test_cameras_and_points_match_reference_decoding():
    io = golden_io("vggt-omega-tiny")
    model = create_model("vggt-omega-tiny", checkpoint=golden_weights("vggt-omega-tiny"))
    with torch.no_grad():
        geometry = to_geometry(model(io["input.images"]), io["input.images"].shape[-2:])
    assert_matches_golden(geometry, io, ["extrinsics", "intrinsics"])
    # Points are the depth unprojected: back in each camera, their z is the depth.
    cam = torch.einsum("bsij,bshwj->bshwi", geometry["extrinsics"][..., :3], geometry["world_points"])
    cam = cam + geometry["extrinsics"][..., None, None, :, 3]
    torch.testing.assert_close(cam[..., 2], geometry["depth"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("preset", "text"), PRESETS.items())
def test_released_key_manifest(preset, text):
    with torch.device("meta"):
        model = VGGTOmega(OmegaConfig(enable_alignment=text))
    assert manifest(model) == released_manifest(preset)
