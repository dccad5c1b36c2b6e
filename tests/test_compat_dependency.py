"""The reference's `vggt.dependency` and `vggt.utils.visual_track` on this package: projection, COLMAP conversion
(read back with pycolmap), the VGGSfM tracker, keypoint extractors and `predict_tracks` with weights in a local
torch hub cache (random weights, as a user's cache would hold the released ones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vggt.dependency.np_to_pycolmap import (
    batch_np_matrix_to_pycolmap,
    batch_np_matrix_to_pycolmap_wo_track,
    pycolmap_to_batch_np_matrix,
)
from vggt.dependency.projection import img_from_cam_np, project_3D_points, project_3D_points_np
from vggt.dependency.vggsfm_tracker import TrackerPredictor
from vggt.errors import InputError


def _scene(frames: int = 3, points: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    extrinsics = np.zeros((frames, 3, 4))
    for i in range(frames):
        angle = 0.1 * i
        extrinsics[i, :3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
        extrinsics[i, :, 3] = [0.2 * i, 0.0, 0.0]
    intrinsics = np.tile(np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]]), (frames, 1, 1))
    points3d = rng.uniform(-1, 1, (points, 3)) + [0, 0, 5]
    return points3d, extrinsics, intrinsics


def test_projection_numpy_and_torch_agree() -> None:
    points3d, extrinsics, intrinsics = _scene()
    pixels, points_cam = project_3D_points_np(points3d, extrinsics, intrinsics)
    assert pixels.shape == (3, 80, 2) and points_cam.shape == (3, 3, 80) and pixels.dtype == np.float64
    expected = np.einsum("bij,nj->bni", extrinsics[:, :, :3], points3d) + extrinsics[:, None, :, 3]
    np.testing.assert_allclose(points_cam.transpose(0, 2, 1), expected)
    torch_pixels, _ = project_3D_points(*(torch.from_numpy(a) for a in (points3d, extrinsics, intrinsics)))
    np.testing.assert_allclose(torch_pixels.numpy(), pixels)
    np.testing.assert_allclose(img_from_cam_np(intrinsics, points_cam), pixels)
    distorted = img_from_cam_np(intrinsics, points_cam, np.full((3, 1), 0.1))
    assert np.abs(distorted - pixels).max() > 0.01


def test_colmap_conversion_with_tracks_round_trips(tmp_path) -> None:
    import pycolmap

    points3d, extrinsics, intrinsics = _scene()
    tracks, _ = project_3D_points_np(points3d, extrinsics, intrinsics)
    tracks[1, :5] += 50  # five observations far off: dropped by the reprojection test
    colors = np.random.default_rng(1).integers(0, 255, (80, 3), dtype=np.uint8)
    reconstruction, valid = batch_np_matrix_to_pycolmap(
        points3d, extrinsics, intrinsics, tracks, np.array([128, 128]), max_reproj_error=2.0,
        min_inlier_per_frame=10, points_rgb=colors, camera_type="PINHOLE",
    )  # fmt: skip
    assert valid.all()
    reconstruction.write(str(tmp_path))
    model = pycolmap.Reconstruction(str(tmp_path))
    assert model.num_points3D() == 80 and len(model.images) == 3
    assert sorted(image.name for image in model.images.values()) == ["image_1", "image_2", "image_3"]
    assert model.images[2].num_points3D == 75 and model.images[1].num_points3D == 80
    point = model.points3D[7]
    np.testing.assert_allclose(point.xyz, points3d[6])
    assert tuple(point.color) == tuple(colors[6]) and point.track.length() == 3
    back_points, back_extrinsics, back_intrinsics, extra = pycolmap_to_batch_np_matrix(model, camera_type="PINHOLE")
    np.testing.assert_allclose(back_points, points3d, atol=1e-9)
    np.testing.assert_allclose(back_extrinsics, extrinsics, atol=1e-9)
    np.testing.assert_allclose(back_intrinsics, intrinsics)
    assert extra is None
    none, no_mask = batch_np_matrix_to_pycolmap(
        points3d, extrinsics, intrinsics, tracks, np.array([128, 128]), max_reproj_error=2.0, min_inlier_per_frame=76
    )
    assert none is None and no_mask is None  # frame 2 keeps 75 inliers


def test_colmap_conversion_without_tracks_and_shared_camera() -> None:
    points3d, extrinsics, intrinsics = _scene(points=6)
    xyf = np.array([[1, 2, 0], [3, 4, 0], [5, 6, 1], [7, 8, 2], [9, 10, 2], [11, 12, 2]], dtype=np.float32)
    colors = np.full((6, 3), 200, np.uint8)
    model = batch_np_matrix_to_pycolmap_wo_track(
        points3d, xyf, colors, extrinsics, intrinsics, np.array([128, 128]), shared_camera=True
    )
    assert len(model.cameras) == 1 and model.cameras[1].model.name == "SIMPLE_PINHOLE"
    assert [model.images[i].num_points3D for i in (1, 2, 3)] == [2, 1, 3]
    np.testing.assert_allclose(model.images[3].points2D[2].xy, (11, 12))  # pixels as given (no half-pixel shift)
    with pytest.raises(InputError, match="camera_type=OPENCV"):
        batch_np_matrix_to_pycolmap_wo_track(points3d, xyf, colors, extrinsics, intrinsics, np.array([8, 8]),
                                             camera_type="OPENCV")  # fmt: skip


def test_vggsfm_tracker_keeps_queries_and_tracks_a_shift() -> None:
    torch.manual_seed(0)
    tracker = TrackerPredictor().eval()
    images = torch.rand(1, 2, 3, 128, 128)  # coarse maps of 16 x 16: five pyramid levels
    queries = torch.tensor([[[20.0, 30.0], [40.5, 25.25]]])
    with torch.no_grad():
        fine, coarse, visibility, score = tracker(images, queries)
        plain, _, _, ones = tracker(images, queries, fine_tracking=False)
    assert fine.shape == coarse.shape == (1, 2, 2, 2) and visibility.shape == (1, 2, 2)
    torch.testing.assert_close(fine[:, 0], queries)
    torch.testing.assert_close(plain, coarse)
    assert score is None and torch.equal(ones, torch.ones_like(visibility))
    assert ((visibility >= 0) & (visibility <= 1)).all()


def test_visualize_tracks_writes_frames_and_grid(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    from vggt.utils.visual_track import get_track_colors_by_position, visualize_tracks_on_images

    tracks = torch.tensor([[[2.0, 3.0], [10.0, 12.0]], [[4.0, 5.0], [11.0, 12.0]], [[6.0, 7.0], [12.0, 12.0]]])
    visible = torch.tensor([[True, False], [True, True], [True, True]])
    colors = get_track_colors_by_position(tracks, visible, image_width=16, image_height=16)
    assert colors.shape == (2, 3) and colors.dtype == np.uint8 and not np.array_equal(colors[0], colors[1])
    visualize_tracks_on_images(
        torch.zeros(3, 3, 16, 16), tracks[None], visible[None], out_dir=tmp_path, frames_per_row=2
    )
    frame = np.asarray(Image.open(tmp_path / "frame_0001.png"))
    assert frame.shape == (16, 32, 3) and frame[:, :16].max() == 0  # the plain frame, then the drawn one
    assert tuple(frame[12, 16 + 11]) == tuple(colors[1])  # track 1's dot in frame 1
    assert np.asarray(Image.open(tmp_path / "tracks_grid.png")).shape == (32, 64, 3)


def test_predict_tracks_runs_on_cached_weights(tmp_path, monkeypatch) -> None:
    pytest.importorskip("kornia")
    from compat_weights import write_tracking_weights

    from vggt.dependency.track_predict import predict_tracks

    write_tracking_weights(tmp_path / "torch")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    images = torch.rand(2, 3, 128, 128)
    conf = np.full((2, 64, 64), 2.0, dtype=np.float32)
    points = np.random.default_rng(0).normal(size=(2, 64, 64, 3))
    tracks, visibility, confidence, points_3d, colors = predict_tracks(
        images, conf=conf, points_3d=points, max_query_pts=32, query_frame_num=2, keypoint_extractor="aliked+sp+sift",
        fine_tracking=False, complete_non_vis=False,
    )  # fmt: skip
    count = tracks.shape[1]
    assert tracks.shape == (2, count, 2) and visibility.shape == (2, count) and count > 0
    assert confidence.shape == (count,) and points_3d.shape == (count, 3) and colors.shape == (count, 3)
    assert colors.dtype == np.uint8 and ((visibility >= 0) & (visibility <= 1)).all()
    # Every track starts at a keypoint of its query frame, whose colour and 3D point it carries.
    first = np.rint(tracks[0, :10]).astype(int)
    np.testing.assert_array_equal(
        colors[:10], (images[0].permute(1, 2, 0).numpy()[first[:, 1], first[:, 0]] * 255).astype(np.uint8)
    )


PYCOLMAP_3_10_CHECK = """
import numpy as np, pycolmap, tempfile
from vggt.dependency.np_to_pycolmap import batch_np_matrix_to_pycolmap, batch_np_matrix_to_pycolmap_wo_track
from vggt.dependency.np_to_pycolmap import pycolmap_to_batch_np_matrix
from vggt.dependency.projection import project_3D_points_np
assert pycolmap.__version__.startswith("3.10"), pycolmap.__version__
extrinsics = np.zeros((3, 3, 4)); extrinsics[:, :3, :3] = np.eye(3); extrinsics[:, 0, 3] = [0, 0.1, 0.2]
intrinsics = np.tile(np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]]), (3, 1, 1))
points = np.random.default_rng(0).uniform(-1, 1, (80, 3)) + [0, 0, 5]
tracks, _ = project_3D_points_np(points, extrinsics, intrinsics)
model, valid = batch_np_matrix_to_pycolmap(points, extrinsics, intrinsics, tracks, np.array([128, 128]),
                                           max_reproj_error=2.0, min_inlier_per_frame=10)
folder = tempfile.mkdtemp(); model.write(folder); model = pycolmap.Reconstruction(folder)
assert model.num_reg_images() == 3 and model.num_points3D() == 80 and valid.all()
back_points, back_extrinsics, _, _ = pycolmap_to_batch_np_matrix(model)
assert np.abs(back_points - points).max() < 1e-9 and np.abs(back_extrinsics - extrinsics).max() < 1e-9
pycolmap.bundle_adjustment(model, pycolmap.BundleAdjustmentOptions())
xyf = np.array([[1, 2, 0], [3, 4, 1], [5, 6, 2]], dtype=np.float32)
flat = batch_np_matrix_to_pycolmap_wo_track(points[:3], xyf, np.zeros((3, 3), np.uint8), extrinsics, intrinsics,
                                            np.array([128, 128]), shared_camera=True)
assert len(flat.cameras) == 1 and flat.num_reg_images() == 3 and flat.num_points3D() == 3
print("ok")
"""


def test_colmap_conversion_under_pycolmap_3_10() -> None:
    """The same conversions with pycolmap 3.10 (images registered directly, no rigs or frames)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    target = Path(sys.prefix) / "pycolmap-3.10"
    if not target.is_dir():
        pytest.skip(f"pycolmap 3.10 is not installed at {target} (bash scripts/install.sh all puts it there)")
    worktree = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(worktree)]), "GLOG_minloglevel": "2"}
    result = subprocess.run([sys.executable, "-c", PYCOLMAP_3_10_CHECK], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
