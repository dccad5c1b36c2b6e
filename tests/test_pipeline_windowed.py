"""Windowed reconstruction (vggt.pipeline.windowed) and known intrinsics (vggt.pipeline.calibration) end to end.

The alignment itself (robust Sim(3), chains, loop closure) is tested on synthetic windows in
tests/test_utils_windows.py; here the real model runs on real photos.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import vggt

pycolmap = pytest.importorskip("pycolmap")

RESOLUTION = 112
FAST = ["--device", "cpu", "--dtype", "float32", "--resolution", str(RESOLUTION)]


@pytest.fixture(scope="module")
def kitchen(examples_dir) -> list[Path]:
    return sorted((examples_dir / "kitchen" / "images").iterdir())[:20]


def run(golden_model, paths, **options):
    return vggt.reconstruct(paths, model=golden_model, device="cpu", dtype="float32", resolution=RESOLUTION, **options)


def test_one_window_holding_every_frame_is_the_plain_run(golden_model, kitchen):
    plain = run(golden_model, kitchen[:8])
    windowed = run(golden_model, kitchen[:8], window=8, overlap=3)
    assert windowed.windows is None
    np.testing.assert_array_equal(windowed.extrinsics, plain.extrinsics)
    np.testing.assert_array_equal(windowed.points, plain.points)
    np.testing.assert_array_equal(windowed.depth, plain.depth)


def test_windows_make_one_reconstruction_in_the_first_cameras_frame(golden_model, kitchen, tmp_path):
    rec = run(golden_model, kitchen, window=8, overlap=3, max_points=3000)
    assert rec.num_frames == 20 and "4 windows" in rec.windows and "alignment residual" in rec.summary()
    np.testing.assert_allclose(rec.extrinsics[0], np.eye(3, 4), atol=1e-5)
    assert np.isfinite(rec.extrinsics).all() and np.isfinite(rec.points).all()
    assert isinstance(rec.predictions.depth, np.memmap)  # on disk, not in memory
    out = rec.save(tmp_path / "out")
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert sorted(image.name for image in model.images.values()) == sorted(p.name for p in kitchen)
    # The COLMAP model holds the cloud's points that other frames see too (random weights: few, or none).
    assert model.num_reg_images() == 20 and model.num_points3D() == len(rec.colmap_cloud.points) <= 3000
    # A frame held by two windows comes from the first: its depth is that window's, scaled into the world.
    predictions = np.load(out / "predictions.npz")
    assert predictions["depth"].shape[0] == 20 and np.isfinite(predictions["depth"]).all()


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vggt", *args], cwd=cwd, stderr=subprocess.PIPE, text=True)


def test_a_killed_windowed_run_resumes_to_the_same_output(kitchen, golden_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in kitchen:
        (photos / path.name).symlink_to(path)
    checkpoint = ["--checkpoint", str(golden_dir / "tiny_state_dict.safetensors"), "--preset", "tiny"]
    common = ["reconstruct", str(photos), "--window", "8", "--overlap", "3", "--max-points", "2000", *checkpoint, *FAST]
    whole = subprocess.run([sys.executable, "-m", "vggt", *common, "--out", "whole", "-q"], cwd=tmp_path)
    assert whole.returncode == 0

    process = _start([*common, "--out", "resumed", "-q"], tmp_path)
    work = tmp_path / ".resumed.windows"
    deadline = time.monotonic() + 240
    while not (work / "window_00001").is_dir():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (tmp_path / "resumed").exists() and (work / "window_00000").is_dir()
    resumed = subprocess.run(
        [sys.executable, "-m", "vggt", *common, "--out", "resumed", "--resume"], cwd=tmp_path, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not work.exists()  # removed once the outputs are in place
    for name in ("points.ply", "cameras.json"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_resume_refuses_the_windows_of_another_run(golden_model, kitchen, tmp_path):
    run(golden_model, kitchen[:12], window=8, overlap=3, work_dir=tmp_path / "work")
    with pytest.raises(vggt.errors.InputError, match="of another run"):
        run(golden_model, kitchen[:12], window=8, overlap=2, work_dir=tmp_path / "work", resume=True)


def test_window_options_are_checked():
    from vggt.errors import InputError
    from vggt.pipeline.options import ReconstructOptions

    with pytest.raises(InputError, match="overlap must be at least 1 and below window"):
        ReconstructOptions(window=4, overlap=4)
    with pytest.raises(InputError, match="resume applies to windowed runs"):
        ReconstructOptions(resume=True)
    with pytest.raises(InputError, match="cannot be combined with window"):
        ReconstructOptions(window=8, bundle_adjust=True)
    assert ReconstructOptions(window=16).overlap == 4
    assert ReconstructOptions(window=8, loop_closure=[2, 30]).loop_closure == (2, 30)
    for bad in [(2,), (30, 2), ("a", "b"), (True, 5)]:
        with pytest.raises(InputError, match="loop_closure"):
            ReconstructOptions(window=8, loop_closure=bad)


def test_a_named_loop_is_linked_to_the_windows_on_its_two_sides():
    from vggt.pipeline.windowed import WindowPlan

    plan = WindowPlan.build(20, 6, 2, (2, 17))  # windows 0-5, 4-9, 8-13, 12-17, 14-19
    assert plan.loop == [15, 16, 17, 2, 3, 4]
    assert plan.loop_links == (4, 0)  # both 12-17 and 14-19 hold 15-17: the later; 0-5 holds 2-4
    plan = WindowPlan.build(20, 6, 2, (7, 15))
    assert plan.loop == [13, 14, 15, 7, 8, 9] and plan.loop_links == (3, 1)
    assert WindowPlan.build(20, 6, 2, True).loop_links == (4, 0)


# ------------------------------------------------------------------------------------------------ intrinsics


def test_known_intrinsics_replace_the_predicted_ones_everywhere(golden_model, kitchen, tmp_path):
    from PIL import Image

    width, height = Image.open(kitchen[0]).size
    camera = {"width": width, "height": height, "fx": 0.8 * width, "fy": 0.8 * width, "cx": width / 2, "cy": height / 2}
    calibration = tmp_path / "intrinsics.json"
    calibration.write_text(json.dumps({"camera": camera}))
    rec = run(golden_model, kitchen[:3], intrinsics=calibration, max_points=500)
    # The JSON's principal point is in OpenCV's convention, this package's (pixel centres at integers).
    expected = np.array([[camera["fx"], 0, camera["cx"]], [0, camera["fy"], camera["cy"]], [0, 0, 1]])
    for intrinsic in rec.intrinsics:
        np.testing.assert_allclose(intrinsic, expected, rtol=1e-6)
    # Points unprojected with the given intrinsics project back onto the pixels they came from.
    obs = rec.observations
    for m in range(0, len(obs), 37):
        i = obs.image_index[m]
        camera_point = rec.extrinsics[i][:, :3] @ rec.points[obs.point_index[m]] + rec.extrinsics[i][:, 3]
        pixel = (rec.intrinsics[i] @ camera_point)[:2] / camera_point[2]
        np.testing.assert_allclose(pixel, obs.xy[m], atol=0.05)
    out = rec.save(tmp_path / "out")
    saved = json.loads((out / "cameras.json").read_text())["images"]
    np.testing.assert_allclose(saved[0]["intrinsic"], expected, rtol=1e-6)


def test_distorted_photos_are_undistorted_before_the_model_sees_them(golden_model, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    camera = {"width": 80, "height": 60, "fx": 70.0, "fy": 70.0, "cx": 40.0, "cy": 30.0, "distortion": [-0.2, 0.05]}
    calibration = tmp_path / "intrinsics.json"
    calibration.write_text(json.dumps({"camera": {**camera, "model": "OPENCV", "distortion": [-0.2, 0.05, 0, 0]}}))
    rec = run(golden_model, folder, intrinsics=calibration, max_points=200)
    out = rec.save(tmp_path / "out")
    original = np.asarray(Image.open(folder / "0.png"))
    written = np.asarray(Image.open(out / "images" / "0.png"))
    assert written.shape == original.shape and not np.array_equal(written, original)  # undistorted pixels
    np.testing.assert_allclose(rec.intrinsics[0][:2, :2], [[70.0, 0], [0, 70.0]])


@pytest.mark.parametrize("loop_closure", [True, (1, 10)])
def test_loop_closure_runs_one_more_pass_and_keeps_the_first_camera(golden_model, kitchen, tmp_path, loop_closure):
    rec = run(golden_model, kitchen[:12], window=6, overlap=2, loop_closure=loop_closure, work_dir=tmp_path / "work")
    assert len([p for p in (tmp_path / "work").iterdir() if p.name.startswith("window_")]) == 4  # 3 + the loop
    np.testing.assert_allclose(rec.extrinsics[0], np.eye(3, 4), atol=1e-5)
    assert np.isfinite(rec.extrinsics).all()
