"""The COLMAP model of a reconstruction (vggt.pipeline.multiview, vggt.export.colmap) handed to COLMAP itself.

A rendered synthetic scene with exact depth and cameras stands in for the model's predictions, so each point's
multi-view track is known to be right. The COLMAP tests run Debian's `colmap` 3.8 (scripts/install_colmap.sh,
installed by CI) and pycolmap 4.2; they skip with a reason when the `colmap` command is absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import synthetic_reconstruction

from vggt.errors import InputError
from vggt.export.colmap import conform_intrinsics
from vggt.pipeline import Reconstruction
from vggt.pipeline.multiview import multiview_tracks, nearest_frames
from vggt.utils.geometry import project_points

pycolmap = pytest.importorskip("pycolmap")
needs_colmap = pytest.mark.skipif(shutil.which("colmap") is None, reason="Debian's colmap not installed")
COLMAP_SECONDS = 120


def colmap(*args: str) -> subprocess.CompletedProcess:
    """Run the `colmap` command headless (no display: Qt's offscreen platform), on the CPU."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run(["colmap", *args], capture_output=True, text=True, timeout=COLMAP_SECONDS, env=env)


@pytest.fixture(scope="module")
def synthetic_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    reconstruction = synthetic_reconstruction(folder / "photos")
    return reconstruction, reconstruction.save(folder / "out")


def test_every_point_has_a_multiview_track_that_reprojects(synthetic_out):
    reconstruction, out = synthetic_out
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    # Exact depth: most of the cloud is seen again in another frame, and every kept point at least twice.
    assert model.num_points3D() > 0.5 * reconstruction.num_points
    lengths = np.array([point.track.length() for point in model.points3D.values()])
    assert lengths.min() >= 2 and lengths.mean() > 2.5
    # Observations are pixel centres: real errors, below a pixel (not COLMAP's -1 for "unknown").
    errors = np.array([point.error for point in model.points3D.values()])
    assert (errors >= 0).all() and 0 < errors.mean() < 0.75
    assert model.compute_mean_reprojection_error() == pytest.approx(errors.mean(), rel=0.2)


def test_multiview_tracks_skip_hidden_and_unconfident_pixels(synthetic_out):
    reconstruction, _ = synthetic_out
    predictions = reconstruction.predictions
    args = (reconstruction.extrinsics, reconstruction.model_intrinsics, reconstruction.transforms)
    everything = multiview_tracks(reconstruction.cloud, predictions.depth, predictions.depth_conf, *args)
    # Depth maps far behind the truth: a point is hidden nowhere but also agrees almost nowhere.
    pushed = multiview_tracks(reconstruction.cloud, predictions.depth * 1.5, predictions.depth_conf, *args)
    assert len(pushed.points) < 0.1 * len(everything.points)
    # Pixels without a confidence are no observations: only frame 0 keeps its confidence, so every observation
    # besides the points' own (the first len(points) rows) lies in frame 0.
    unsure = np.where(np.arange(len(predictions.depth))[:, None, None] == 0, predictions.depth_conf, np.nan)
    only_first = multiview_tracks(reconstruction.cloud, predictions.depth, unsure, *args)
    added = only_first.observations.image_index[len(only_first.points) :]
    assert 0 < len(added) == len(only_first.points) and set(added.tolist()) == {0}


def test_observations_are_where_the_points_project(synthetic_out):
    reconstruction, _ = synthetic_out
    cloud = reconstruction.colmap_cloud
    obs = cloud.observations
    pixels, _ = project_points(
        cloud.points[obs.point_index].astype(np.float64)[:, None], reconstruction.extrinsics[obs.image_index],
        reconstruction.intrinsics[obs.image_index],
    )  # fmt: skip
    assert np.abs(pixels[:, 0] - obs.xy).max() <= 0.5 + 1e-3  # the nearest pixel centre


def test_pycolmap_bundle_adjustment_refines_the_default_output(synthetic_out):
    _, out = synthetic_out
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    before = model.compute_mean_reprojection_error()
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    pycolmap.bundle_adjustment(model, options)
    assert model.compute_mean_reprojection_error() < before


@needs_colmap
def test_colmap_bundle_adjuster_and_model_analyzer_accept_the_default_output(synthetic_out, tmp_path):
    _, out = synthetic_out
    adjusted = tmp_path / "adjusted"
    adjusted.mkdir()
    run = colmap("bundle_adjuster", "--input_path", str(out / "sparse" / "0"), "--output_path", str(adjusted))
    assert run.returncode == 0, run.stderr[-2000:]
    assert pycolmap.Reconstruction(str(adjusted)).num_points3D() > 0
    analysis = colmap("model_analyzer", "--path", str(out / "sparse" / "0"))
    assert analysis.returncode == 0, analysis.stderr[-2000:]
    text = analysis.stdout + analysis.stderr
    error = float(re.search(r"Mean reprojection error: ([0-9.]+)px", text).group(1))
    length = float(re.search(r"Mean track length: ([0-9.]+)", text).group(1))
    assert error > 0 and length >= 2


@needs_colmap
def test_colmap_point_triangulator_on_the_model_without_points(tmp_path):
    reconstruction = synthetic_reconstruction(tmp_path / "photos", num_frames=4, height=120, width=160,
                                              colmap_points=False)  # fmt: skip
    out = reconstruction.save(tmp_path / "out")
    sparse = out / "sparse" / "0"
    empty = pycolmap.Reconstruction(str(sparse))
    assert empty.num_points3D() == 0 and empty.num_reg_images() == 4
    assert all(image.num_points2D() == 0 for image in empty.images.values())
    database, triangulated = tmp_path / "database.db", tmp_path / "triangulated"
    triangulated.mkdir()
    steps = [
        ("feature_extractor", "--database_path", database, "--image_path", out / "images",
         "--SiftExtraction.use_gpu", "0", "--SiftExtraction.num_threads", "1"),  # database ids in name order
        ("exhaustive_matcher", "--database_path", database, "--SiftMatching.use_gpu", "0"),
        ("point_triangulator", "--database_path", database, "--image_path", out / "images", "--input_path", sparse,
         "--output_path", triangulated),
    ]  # fmt: skip
    for step in steps:
        run = colmap(*map(str, step))
        assert run.returncode == 0, f"{step[0]}: {run.stderr[-2000:]}"
    result = pycolmap.Reconstruction(str(triangulated))
    assert result.num_reg_images() == 4 and result.num_points3D() > 0


def test_shared_simple_pinhole_camera_everywhere(tmp_path):
    reconstruction = synthetic_reconstruction(tmp_path / "photos", num_frames=3, camera_model="SIMPLE_PINHOLE",
                                              shared_camera=True)  # fmt: skip
    out = reconstruction.save(tmp_path / "out")
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert len(model.cameras) == 1 and {image.camera_id for image in model.images.values()} == {1}
    assert model.cameras[1].model.name == "SIMPLE_PINHOLE"
    cameras = json.loads((out / "cameras.json").read_text())
    cameras = cameras["images"] if isinstance(cameras, dict) else cameras
    intrinsics = np.array([entry["intrinsic"] for entry in cameras])
    np.testing.assert_allclose(intrinsics, intrinsics[:1].repeat(3, 0))
    assert intrinsics[0, 0, 0] == intrinsics[0, 1, 1]
    np.testing.assert_allclose(model.cameras[1].params[0], intrinsics[0, 0, 0], rtol=1e-6)
    transforms = json.loads((out / "transforms.json").read_text())
    assert transforms["camera_model"] == "SIMPLE_PINHOLE" and "fl_x" in transforms
    assert all("fl_x" not in frame for frame in transforms["frames"])
    # Read back, it is saved again as it was written.
    assert Reconstruction.load(out).export == reconstruction.export


def test_conform_intrinsics():
    intrinsics = np.array([[[100.0, 0, 30], [0, 110, 20], [0, 0, 1]], [[120.0, 0, 32], [0, 130, 22], [0, 0, 1]]])
    sizes = np.array([[64, 48], [64, 48]])
    shared = conform_intrinsics(intrinsics, sizes, "PINHOLE", shared_camera=True)
    np.testing.assert_allclose(shared, [[[110, 0, 31], [0, 120, 21], [0, 0, 1]]] * 2)
    simple = conform_intrinsics(intrinsics, sizes, "SIMPLE_PINHOLE", shared_camera=False)
    np.testing.assert_allclose(simple[:, 0, 0], [105, 125])
    np.testing.assert_allclose(simple[:, 1, 1], [105, 125])
    with pytest.raises(InputError, match="shared_camera.*one size"):
        conform_intrinsics(intrinsics, np.array([[64, 48], [48, 64]]), "PINHOLE", shared_camera=True)
    with pytest.raises(InputError, match="camera_model"):
        conform_intrinsics(intrinsics, sizes, "OPENCV", shared_camera=False)


def test_points_are_looked_for_in_the_nearest_frames_only(synthetic_out):
    reconstruction, _ = synthetic_out
    marks = nearest_frames(reconstruction.extrinsics, 2)
    assert marks.sum(1).tolist() == [2] * reconstruction.num_frames and not marks.diagonal().any()
    predictions = reconstruction.predictions
    args = (reconstruction.extrinsics, reconstruction.model_intrinsics, reconstruction.transforms)
    near = multiview_tracks(reconstruction.cloud, predictions.depth, predictions.depth_conf, *args, neighbour_frames=2)
    source = near.observations.image_index[: len(near.points)]
    for point, frame in zip(
        near.observations.point_index[len(near.points) :], near.observations.image_index[len(near.points) :]
    ):
        assert marks[source[point], frame]
    everything = multiview_tracks(reconstruction.cloud, predictions.depth, predictions.depth_conf, *args)
    assert len(near.observations) < len(everything.observations)
