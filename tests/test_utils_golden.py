"""vggt.utils against the reference's golden outputs, plus properties of rotations, pose encoding and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close_golden
from scipy.spatial.transform import Rotation

from vggt.utils.geometry import (
    apply_radial_distortion,
    as_homogeneous,
    camera_to_world_points,
    closed_form_inverse_se3,
    depth_map_to_camera_points,
    depth_map_to_world_points,
    depth_to_world_coords_points,
    pixel_grid,
    pixels_to_camera_points,
    project_points,
    project_world_points_to_cam,
    unproject_depth_map_to_point_map,
    world_to_camera_points,
)
from vggt.utils.load_fn import load_and_preprocess_images
from vggt.utils.pose_enc import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from vggt.utils.rotation import mat_to_quat, quat_multiply, quat_to_mat, rotation_angle, standardize_quaternion

GOLDEN_IMAGE_SIZE_HW = (70, 98)  # input.images of tiny_io.safetensors


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_extrinsics(*batch: int, seed: int = 0) -> torch.Tensor:
    """[*batch, 3, 4] float64 camera-from-world transforms."""
    quaternions = torch.randn(*batch, 4, dtype=torch.float64, generator=_generator(seed))
    translations = torch.randn(*batch, 3, 1, dtype=torch.float64, generator=_generator(seed + 1))
    return torch.cat((quat_to_mat(quaternions), translations), dim=-1)


# --- golden -----------------------------------------------------------------------------------------------------------


def test_pose_encoding_golden(golden_io, tolerances) -> None:
    extrinsics, intrinsics = pose_encoding_to_extri_intri(golden_io["utils.pose_enc"], GOLDEN_IMAGE_SIZE_HW)
    assert_close_golden("utils.extrinsics", extrinsics, golden_io["utils.extrinsics"], tolerances)
    assert_close_golden("utils.intrinsics", intrinsics, golden_io["utils.intrinsics"], tolerances)

    encoding = extri_intri_to_pose_encoding(
        golden_io["utils.extrinsics"], golden_io["utils.intrinsics"], GOLDEN_IMAGE_SIZE_HW
    )
    assert_close_golden("utils.pose_enc_roundtrip", encoding, golden_io["utils.pose_enc_roundtrip"], tolerances)


def test_unproject_golden(golden_io, tolerances) -> None:
    points = unproject_depth_map_to_point_map(
        golden_io["forward.depth"][0], golden_io["utils.extrinsics"][0], golden_io["utils.intrinsics"][0]
    )
    assert isinstance(points, np.ndarray)
    expected = golden_io["utils.unprojected_points_scene0"]
    assert_close_golden("utils.unprojected_points_scene0", torch.from_numpy(points), expected, tolerances)

    # The batched torch path gives the same points for every scene at once.
    batched = depth_map_to_world_points(
        golden_io["forward.depth"][..., 0], golden_io["utils.extrinsics"], golden_io["utils.intrinsics"]
    )
    assert batched.shape == (2, 3, 70, 98, 3)
    assert_close_golden("utils.unprojected_points_scene0", batched[0], expected, tolerances)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_preprocess_room_golden(golden_io, golden_config, examples_dir, tolerances, mode: str) -> None:
    paths = [examples_dir / "room" / "images" / name for name in golden_config["room_images"]]
    images = load_and_preprocess_images(paths, mode=mode)
    assert_close_golden(f"preprocess.room_{mode}", images, golden_io[f"preprocess.room_{mode}"], tolerances)


def test_preprocess_palette_golden(golden_io, golden_config, examples_dir, tolerances) -> None:
    paths = [examples_dir / "single_oil_painting" / "images" / name for name in golden_config["oil_painting_images"]]
    images = load_and_preprocess_images(paths, mode="crop")
    assert_close_golden("preprocess.oil_painting_crop", images, golden_io["preprocess.oil_painting_crop"], tolerances)


# --- rotations ----------------------------------------------------------------------------------------------------


def test_quaternion_matrix_round_trip_and_scipy() -> None:
    quaternions = torch.randn(256, 4, dtype=torch.float64, generator=_generator())
    quaternions = standardize_quaternion(quaternions / quaternions.norm(dim=-1, keepdim=True))
    matrices = quat_to_mat(quaternions)

    torch.testing.assert_close(
        matrices @ matrices.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(256, 3, 3)
    )
    torch.testing.assert_close(torch.linalg.det(matrices), torch.ones(256, dtype=torch.float64))
    np.testing.assert_allclose(matrices.numpy(), Rotation.from_quat(quaternions.numpy()).as_matrix(), atol=1e-12)
    torch.testing.assert_close(mat_to_quat(matrices), quaternions)
    assert torch.all(mat_to_quat(matrices)[..., 3] >= 0)


def test_mat_to_quat_half_turns() -> None:
    # w = 0: the candidate built from the trace is degenerate, another one must be picked.
    axes = torch.nn.functional.normalize(torch.randn(32, 3, dtype=torch.float64, generator=_generator(3)), dim=-1)
    matrices = torch.from_numpy(Rotation.from_rotvec((np.pi * axes).numpy()).as_matrix())
    quaternions = mat_to_quat(matrices)
    torch.testing.assert_close(quat_to_mat(quaternions), matrices)
    torch.testing.assert_close(quaternions[..., 3].abs(), torch.zeros(32, dtype=torch.float64), atol=1e-7, rtol=0)


def test_quaternion_product_and_angle() -> None:
    a = torch.randn(16, 4, dtype=torch.float64, generator=_generator(1))
    b = torch.randn(16, 4, dtype=torch.float64, generator=_generator(2))
    torch.testing.assert_close(quat_to_mat(quat_multiply(a, b)), quat_to_mat(a) @ quat_to_mat(b))
    angles = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    matrices = torch.from_numpy(Rotation.from_rotvec(np.outer(angles.numpy(), [0.0, 0.6, 0.8])).as_matrix())
    torch.testing.assert_close(rotation_angle(matrices), angles)


# --- pose encoding ------------------------------------------------------------------------------------------------


def test_pose_encoding_round_trip() -> None:
    height, width = 280, 518
    extrinsics = _random_extrinsics(2, 5)
    focal = 300.0 + 200.0 * torch.rand(2, 5, 2, dtype=torch.float64, generator=_generator(4))
    intrinsics = torch.zeros(2, 5, 3, 3, dtype=torch.float64)
    intrinsics[..., 0, 0], intrinsics[..., 1, 1] = focal[..., 0], focal[..., 1]
    intrinsics[..., 0, 2], intrinsics[..., 1, 2], intrinsics[..., 2, 2] = width / 2, height / 2, 1.0

    # The reference's dtypes: the encoding is float32 whatever the inputs, decoded intrinsics are float32 and
    # decoded extrinsics keep the encoding's dtype.
    encoding = extri_intri_to_pose_encoding(extrinsics, intrinsics, (height, width))
    assert encoding.shape == (2, 5, 9) and encoding.dtype == torch.float32
    torch.testing.assert_close(encoding[..., 7], (2 * torch.atan(height / 2 / focal[..., 1])).float())
    decoded_extrinsics, decoded_intrinsics = pose_encoding_to_extri_intri(encoding, (height, width))
    assert decoded_extrinsics.dtype == decoded_intrinsics.dtype == torch.float32
    torch.testing.assert_close(decoded_extrinsics, extrinsics.float())
    torch.testing.assert_close(decoded_intrinsics, intrinsics.float())
    decoded_extrinsics, decoded_intrinsics = pose_encoding_to_extri_intri(encoding.double(), (height, width))
    assert decoded_extrinsics.dtype == torch.float64 and decoded_intrinsics.dtype == torch.float32

    only_extrinsics, none = pose_encoding_to_extri_intri(encoding, build_intrinsics=False)
    assert none is None and only_extrinsics.shape == (2, 5, 3, 4)


def test_pose_encoding_errors() -> None:
    encoding = torch.zeros(1, 2, 9)
    with pytest.raises(ValueError, match="image_size_hw"):
        pose_encoding_to_extri_intri(encoding)
    with pytest.raises(ValueError, match="absT_quaR_FoV"):
        pose_encoding_to_extri_intri(encoding, (14, 14), pose_encoding_type="relT_quaR")
    with pytest.raises(ValueError, match=r"\[\.\.\., 9\]"):
        pose_encoding_to_extri_intri(torch.zeros(1, 2, 8), (14, 14))


# --- geometry -------------------------------------------------------------------------------------------------------


def test_closed_form_inverse_matches_linalg_inv() -> None:
    extrinsics = _random_extrinsics(3, 4)
    expected = torch.linalg.inv(as_homogeneous(extrinsics))
    torch.testing.assert_close(closed_form_inverse_se3(extrinsics), expected)
    torch.testing.assert_close(closed_form_inverse_se3(as_homogeneous(extrinsics)), expected)
    inverse_numpy = closed_form_inverse_se3(extrinsics.numpy())
    assert isinstance(inverse_numpy, np.ndarray)
    np.testing.assert_allclose(inverse_numpy, expected.numpy(), atol=1e-12)
    flat = extrinsics.reshape(12, 3, 4)
    torch.testing.assert_close(
        closed_form_inverse_se3(flat, R=flat[:, :, :3], T=flat[:, :, 3:]), expected.reshape(12, 4, 4)
    )
    with pytest.raises(ValueError, match="3, 4"):
        closed_form_inverse_se3(torch.zeros(2, 3, 3))


def test_world_camera_round_trip() -> None:
    extrinsics = _random_extrinsics(4)
    points = torch.randn(4, 100, 3, dtype=torch.float64, generator=_generator(5))
    points_cam = world_to_camera_points(points, extrinsics)
    torch.testing.assert_close(points_cam, points @ extrinsics[:, :, :3].mT + extrinsics[:, None, :, 3])
    torch.testing.assert_close(camera_to_world_points(points_cam, extrinsics), points)


def test_unproject_then_project_returns_the_pixel_grid() -> None:
    frames, height, width = 3, 6, 9
    extrinsics = _random_extrinsics(frames, seed=6)
    intrinsics = torch.tensor([[20.0, 0.0, width / 2], [0.0, 22.0, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    intrinsics = intrinsics.expand(frames, 3, 3)
    depth = 1.0 + torch.rand(frames, height, width, dtype=torch.float64, generator=_generator(7))

    points_world = depth_map_to_world_points(depth, extrinsics, intrinsics)  # [S, H, W, 3]
    pixels, projected_depth = project_points(points_world.reshape(frames, -1, 3), extrinsics, intrinsics)
    grid = pixel_grid(height, width, dtype=torch.float64).reshape(-1, 2).expand(frames, -1, -1)
    torch.testing.assert_close(pixels, grid)
    torch.testing.assert_close(projected_depth, depth.reshape(frames, -1))

    # The numpy drop-in computes as the reference does (float32 camera points moved to the world in float64, a
    # float64 result), with or without the trailing depth channel.
    numpy_points = unproject_depth_map_to_point_map(depth[..., None].numpy(), extrinsics.numpy(), intrinsics.numpy())
    assert numpy_points.dtype == np.float64
    points_cam32 = depth_map_to_camera_points(depth, intrinsics).float().double()
    expected = camera_to_world_points(points_cam32.reshape(frames, -1, 3), extrinsics).reshape(points_world.shape)
    np.testing.assert_allclose(numpy_points, expected.numpy(), atol=1e-12)
    np.testing.assert_allclose(
        unproject_depth_map_to_point_map(depth.float(), extrinsics.float(), intrinsics.float()),
        points_world.numpy(),
        atol=1e-5,
    )


def test_depth_to_world_coords_points_mask_and_types() -> None:
    depth = np.ones((4, 5), dtype=np.float32)
    depth[0, 0] = 0.0
    intrinsics = np.array([[10.0, 0.0, 2.5], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    extrinsic = _random_extrinsics(seed=8).float().numpy()
    world, cam, mask = depth_to_world_coords_points(depth, extrinsic, intrinsics)
    assert world.shape == cam.shape == (4, 5, 3) and cam.dtype == np.float32
    assert mask.sum() == 19 and not mask[0, 0]
    np.testing.assert_allclose(cam[1, 3], [(3 - 2.5) / 10, (1 - 2.0) / 10, 1.0], atol=1e-7)
    np.testing.assert_allclose(world, (cam - extrinsic[:, 3]) @ extrinsic[:, :3], atol=1e-5)


def test_pixels_to_camera_points_inverts_projection_with_skew() -> None:
    intrinsics = torch.tensor([[30.0, 1.5, 10.0], [0.0, 28.0, 7.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    points = torch.randn(50, 3, dtype=torch.float64, generator=_generator(9))
    points[:, 2] = points[:, 2].abs() + 0.5
    pixels, depth = project_points(points, torch.eye(3, 4, dtype=torch.float64), intrinsics)
    torch.testing.assert_close(pixels_to_camera_points(pixels, depth, intrinsics), points)


def test_radial_distortion_and_reference_layout() -> None:
    distorted = apply_radial_distortion(np.array([[0.5, 0.0], [0.0, -0.2]]), np.array([0.1, 0.01]))
    np.testing.assert_allclose(distorted, [[0.5 * (1 + 0.025 + 0.000625), 0.0], [0.0, -0.2 * (1 + 0.004 + 0.000016)]])

    extrinsics = _random_extrinsics(2, seed=10)
    intrinsics = torch.tensor([[50.0, 0.0, 20.0], [0.0, 50.0, 15.0], [0.0, 0.0, 1.0]], dtype=torch.float64).expand(
        2, 3, 3
    )
    points = torch.randn(7, 3, dtype=torch.float64, generator=_generator(11))
    radial = torch.tensor([[0.05], [-0.02]], dtype=torch.float64)
    pixels, points_cam = project_world_points_to_cam(points, extrinsics, intrinsics, distortion_params=radial)
    assert pixels.shape == (2, 7, 2) and points_cam.shape == (2, 3, 7)
    expected, _ = project_points(points, extrinsics, intrinsics, radial_distortion=radial)
    torch.testing.assert_close(pixels, expected)
    undistorted, _ = project_points(points, extrinsics, intrinsics)
    assert not torch.allclose(pixels, undistorted)
