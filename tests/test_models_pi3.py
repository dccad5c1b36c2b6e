"""Pi3 reproduces yyfz/Pi3: golden outputs of the reference on a small configuration, the released key manifest,
and the conversion of its reference-free outputs to cameras in the first camera's frame."""

from __future__ import annotations

import torch
from family_goldens import assert_matches_golden, golden_io, golden_weights, manifest, released_manifest

from vggt.models.family_outputs import to_geometry
from vggt.models.pi3 import Pi3
from vggt.models.registry import create_model
from vggt.utils.geometry import depth_map_to_world_points


def _golden_run() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    io = golden_io("pi3-tiny")
    model = create_model("pi3-tiny", checkpoint=golden_weights("pi3-tiny"))
    with torch.no_grad():
        return model(io["input.images"]), io


def test_reproduces_reference_outputs():
    outputs, io = _golden_run()
    assert_matches_golden(outputs, io, ["camera_poses", "conf", "local_points", "points"])


def test_geometry_is_in_the_first_camera_frame():
    outputs, io = _golden_run()
    geometry = to_geometry(outputs, io["input.images"].shape[-2:])
    eye = torch.eye(3).expand(1, 3, 3)
    torch.testing.assert_close(geometry["extrinsics"][:, 0, :, :3], eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(geometry["extrinsics"][:, 0, :, 3], torch.zeros(1, 3), atol=1e-5, rtol=0)
    # The first frame's world points are its camera points; every frame's depth is its camera-frame z.
    scale = outputs["local_points"].abs().max()
    torch.testing.assert_close(geometry["world_points"][:, 0] / scale, outputs["local_points"][:, 0] / scale,
                               atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(geometry["depth"], outputs["local_points"][..., 2])
    assert ((geometry["depth_conf"] > 0) & (geometry["depth_conf"] < 1)).all()


def test_fitted_intrinsics_unproject_depth_onto_exact_pinhole_points():
    """On points that a pinhole camera sees exactly, the fitted focal lengths reproduce them from depth."""
    H, W, fx, fy = 6, 8, 7.0, 5.0
    depth = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(0)) + 1.0
    intrinsics = torch.tensor([[fx, 0, W / 2], [0, fy, H / 2], [0, 0, 1.0]]).expand(1, 1, 3, 3)
    identity = torch.eye(4)[:3].expand(1, 1, 3, 4)
    local = depth_map_to_world_points(depth, identity, intrinsics)
    outputs = {"camera_poses": torch.eye(4).expand(1, 1, 4, 4), "points": local, "local_points": local,
               "conf": torch.ones(1, 1, H, W, 1)}  # fmt: skip
    geometry = to_geometry(outputs, (H, W))
    torch.testing.assert_close(geometry["intrinsics"], intrinsics)


def test_released_key_manifest():
    with torch.device("meta"):
        model = Pi3()
    assert manifest(model) == released_manifest("pi3-tiny")
