"""The reference's Python surface under its names: helpers, geometry, constructors and from_pretrained keywords."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vggt.errors import CheckpointError, InputError
from vggt.models.aggregator import Aggregator
from vggt.models.config import get_preset
from vggt.models.vggt import VGGT
from vggt.utils.geometry import (
    cam_from_img,
    closed_form_inverse_se3,
    img_from_cam,
    project_world_points_to_cam,
    project_world_points_to_camera_points_batch,
    unproject_depth_map_to_point_map,
)
from vggt.utils.helper import create_pixel_coordinate_grid, randomly_limit_trues


def test_randomly_limit_trues_keeps_the_seeded_reference_choice() -> None:
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[:, 1:, 2:] = True
    np.random.seed(0)
    limited = randomly_limit_trues(mask, 7)
    assert limited.shape == mask.shape and limited.sum() == 7 and not (limited & ~mask).any()
    np.random.seed(0)
    chosen = np.random.choice(np.flatnonzero(mask), size=7, replace=False)
    assert set(np.flatnonzero(limited)) == set(chosen)
    assert randomly_limit_trues(mask, 1000).sum() == mask.sum()


def test_pixel_coordinate_grid_is_x_y_frame() -> None:
    grid = create_pixel_coordinate_grid(2, 3, 4)
    assert grid.shape == (2, 3, 4, 3) and grid.dtype == np.float32
    assert tuple(grid[1, 2, 3]) == (3.0, 2.0, 1.0)


def _cameras(frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    angles = torch.rand(frames, generator=generator)
    rotation = torch.zeros(frames, 3, 3, dtype=torch.float64)
    rotation[:, 0, 0], rotation[:, 0, 2] = torch.cos(angles), torch.sin(angles)
    rotation[:, 2, 0], rotation[:, 2, 2] = -torch.sin(angles), torch.cos(angles)
    rotation[:, 1, 1] = 1
    translation = torch.rand(frames, 3, 1, generator=generator, dtype=torch.float64)
    intrinsics = torch.tensor([[50.0, 0, 20], [0, 60.0, 15], [0, 0, 1]], dtype=torch.float64).expand(frames, 3, 3)
    return torch.cat((rotation, translation), dim=-1), intrinsics


@pytest.mark.parametrize("coefficients", [None, [[0.05]], [[0.05, -0.02]], [[0.05, -0.02, 0.001, 0.002]]])
def test_img_from_cam_and_cam_from_img_invert_each_other(coefficients) -> None:
    extrinsics, intrinsics = _cameras(1)
    params = None if coefficients is None else torch.tensor(coefficients, dtype=torch.float64)
    points = torch.rand(1, 3, 40, dtype=torch.float64) + torch.tensor([[-0.5], [-0.5], [2.0]], dtype=torch.float64)
    pixels = img_from_cam(intrinsics, points, params)
    assert pixels.shape == (1, 40, 2)
    normalized = cam_from_img(pixels, intrinsics, params)
    torch.testing.assert_close(normalized, (points[:, :2] / points[:, 2:]).transpose(1, 2))
    # Same pixels as the batched projection of world points.
    world = torch.linalg.solve(extrinsics[:, :, :3], points - extrinsics[:, :, 3:])[0].T
    projected, cam_points = project_world_points_to_cam(world, extrinsics, intrinsics, params)
    torch.testing.assert_close(projected, pixels)
    torch.testing.assert_close(cam_points, points)


def test_batched_camera_points_and_numpy_dtypes_follow_the_reference() -> None:
    extrinsics, intrinsics = _cameras(3)
    world = torch.rand(1, 3, 4, 5, 3, dtype=torch.float64)
    moved = project_world_points_to_camera_points_batch(world, extrinsics[None])
    expected = torch.einsum("sij,shwj->shwi", extrinsics[:, :, :3], world[0]) + extrinsics[:, None, None, :, 3]
    torch.testing.assert_close(moved, expected[None])
    depth = np.ones((3, 4, 5, 1), dtype=np.float32)
    points = unproject_depth_map_to_point_map(depth, extrinsics.float().numpy(), intrinsics.float().numpy())
    assert points.dtype == np.float64  # as the reference: float32 camera points moved in float64
    assert closed_form_inverse_se3(extrinsics.float().numpy()).dtype == np.float64


def test_constructors_take_the_reference_arguments() -> None:
    with torch.device("meta"):
        model = VGGT(518, 14, 1024, True, True, True, False)
        assert model.track_head is None and model.config.img_size == 518
        tiny = VGGT(get_preset("tiny"), enable_point=False)
        assert tiny.config.embed_dim == 64 and tiny.point_head is None
        aggregator = Aggregator(img_size=224, patch_size=14, embed_dim=384, depth=2, num_heads=6,
                                patch_embed="dinov2_vits14_reg")  # fmt: skip
        assert len(aggregator.frame_blocks) == 2 and aggregator.patch_embed.pos_embed.shape == (1, 257, 384)
    with pytest.raises(InputError, match="patch_embed='conv'"):
        Aggregator(patch_embed="conv")
    with pytest.raises(InputError, match="embed_dim"):
        Aggregator(embed_dim=768)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("tiny")
    model = VGGT.from_preset("tiny").eval()
    model.save_pretrained(folder)
    return folder, model


def test_from_pretrained_applies_constructor_keywords(tiny_checkpoint) -> None:
    folder, model = tiny_checkpoint
    loaded = VGGT.from_pretrained(folder, enable_track=False, map_location="cpu")
    assert loaded.track_head is None and loaded.config.embed_dim == 64
    torch.testing.assert_close(loaded.depth_head.state_dict(), model.depth_head.state_dict())
    with pytest.raises(CheckpointError, match="embed_dim=1024 .checkpoint: 64. contradicts the checkpoint"):
        VGGT.from_pretrained(folder, embed_dim=1024)
    with pytest.raises(InputError, match="unknown keywords not_a_keyword"):
        VGGT.from_pretrained(folder, not_a_keyword=1)
    with pytest.raises(InputError, match="disagree"):
        VGGT.from_pretrained(folder, device="cpu", map_location="meta")


def test_from_pretrained_strict_false_keeps_initialised_tensors(tiny_checkpoint, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    folder, model = tiny_checkpoint
    state = load_file(str(folder / "model.safetensors"))
    partial = {k: v for k, v in state.items() if not k.startswith("camera_head.")}
    (tmp_path / "partial").mkdir()
    save_file(partial, str(tmp_path / "partial" / "model.safetensors"))
    (tmp_path / "partial" / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match="missing keys"):
        VGGT.from_pretrained(tmp_path / "partial")
    loaded = VGGT.from_pretrained(tmp_path / "partial", strict=False)
    torch.testing.assert_close(loaded.depth_head.state_dict(), model.depth_head.state_dict())
    assert loaded.camera_head is not None and not loaded.camera_head.empty_pose_tokens.is_meta


def test_exif_orientation_can_be_ignored_like_the_reference(tmp_path) -> None:
    from PIL import Image

    from vggt.utils.load_fn import load_and_preprocess_images, load_and_preprocess_images_square

    photo = Image.new("RGB", (140, 70), (200, 10, 10))  # stored landscape
    exif = photo.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: portrait
    path = tmp_path / "portrait.jpg"
    photo.save(path, exif=exif)
    upright = load_and_preprocess_images([path])
    stored = load_and_preprocess_images([path], exif_orientation=False)
    assert upright.shape[-2:] == (518, 518) and stored.shape[-2] < stored.shape[-1] == 518  # portrait is cropped
    assert stored.dtype == torch.float32
    _, coords_upright = load_and_preprocess_images_square([path], 56)
    _, coords_stored = load_and_preprocess_images_square([path], 56, exif_orientation=False)
    assert coords_upright[0, 4:].tolist() == [70, 140] and coords_stored[0, 4:].tolist() == [140, 70]
