"""`vggt reconstruct --model NAME` and `vggt.reconstruct(model=NAME)` with every model of the family (small
presets, random weights) on the example photos: a complete output folder read back by pycolmap, trimesh and
numpy, cameras in the first camera's frame, and the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vggt.cli.main import main

pycolmap = pytest.importorskip("pycolmap")
trimesh = pytest.importorskip("trimesh")

FAST = ["--device", "cpu", "--dtype", "float32", "--resolution", "112", "--max-frames", "3"]
TINY_MODELS = ("vggt-tiny", "vggt-omega-tiny", "vggt-omega-text-tiny", "pi3-tiny", "pi3x-tiny")


def check_output_folder(out, num_frames: int) -> dict:
    """What every reconstruction folder holds, read back by the tools that read it; returns cameras.json."""
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert model.num_reg_images() == num_frames and model.num_cameras() == num_frames
    scene = trimesh.load(out / "scene.glb")
    assert len(scene.geometry) >= 1 + num_frames  # the cloud and one frustum per image
    cloud = trimesh.load(out / "points.ply")
    assert len(cloud.vertices) > 0 and np.isfinite(cloud.vertices).all()
    depths = sorted((out / "depth").glob("*.npy"))
    assert len(depths) == num_frames
    for path in depths:
        depth = np.load(path)
        assert depth.dtype == np.float32 and depth.ndim == 2 and np.isfinite(depth).all()
    cameras = json.loads((out / "cameras.json").read_text())
    assert len(cameras["images"]) == num_frames
    return cameras


@pytest.mark.parametrize("name", TINY_MODELS)
def test_reconstruct_with_every_model(name, examples_dir, tmp_path, capsys):
    out = tmp_path / name
    photos = examples_dir / "kitchen" / "images"
    assert main(["reconstruct", str(photos), "--out", str(out), "--model", name, *FAST]) == 0
    assert "RANDOM weights" in capsys.readouterr().err
    cameras = check_output_folder(out, 3)
    if name.startswith("pi3"):  # no reference frame of their own: written in their first camera's frame
        first = np.array(cameras["images"][0]["extrinsic"])
        np.testing.assert_allclose(first, np.eye(4)[:3], atol=1e-5)
    metric = name.startswith("pi3x")
    assert cameras["metric"] is metric
    saved = np.load(out / "predictions.npz")
    assert ("metric_scale" in saved) is metric


def test_family_checkpoint_file_loads_strictly(examples_dir, tmp_path, capsys):
    """A small preset with weights from a file: loaded under the model's own key names, strictly."""
    from vggt.models.registry import create_model

    torch.manual_seed(0)
    weights = {key: value.contiguous() for key, value in create_model("pi3-tiny").state_dict().items()}
    checkpoint = tmp_path / "pi3_tiny.safetensors"
    save_file(weights, str(checkpoint))
    photos = examples_dir / "kitchen" / "images"
    out = tmp_path / "out"
    args = ["reconstruct", str(photos), "--out", str(out), "--model", "pi3-tiny", "--checkpoint", str(checkpoint)]
    assert main(args + FAST) == 0
    check_output_folder(out, 3)
    # The same weights through the Python API give the same cameras.
    import vggt

    again = vggt.reconstruct(photos, model="pi3-tiny", checkpoint=str(checkpoint), device="cpu", dtype="float32",
                             resolution=112, max_frames=3)  # fmt: skip
    written = json.loads((out / "cameras.json").read_text())["images"]
    np.testing.assert_allclose(again.cameras.extrinsics, [image["extrinsic"] for image in written], atol=1e-5)
    del weights["camera_head.fc_t.bias"]
    save_file(weights, str(checkpoint))
    assert main(args + ["--overwrite"] + FAST) == 2  # a missing tensor: one line naming it
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "camera_head.fc_t.bias" in error and "model pi3-tiny" in error


def test_unknown_model_and_refusals(examples_dir, tmp_path, capsys):
    photos = examples_dir / "kitchen" / "images"
    out = tmp_path / "out"
    assert main(["reconstruct", str(photos), "--out", str(out), "--model", "pi4", *FAST]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "'pi4'" in error and "vggt-1b, vggt-omega-1b-512, vggt-omega-1b-256-text, pi3, pi3x" in error
    assert main(["reconstruct", str(photos), "--out", str(out), "--model", "pi3-tiny", "--ba", *FAST]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "track head" in error
    assert main(["reconstruct", str(photos), "--out", str(out), "--model", "pi3-tiny", "--preset", "tiny"] + FAST) == 2
    assert not out.exists()


def test_windowed_run_and_engine_options_with_pi3x(examples_dir, tmp_path, capsys):
    """A windowed run of a non-VGGT model: one reference pass per window, merged like VGGT's windows into the
    first window's frame and (metric) scale; the streaming engine's options are said to be ignored in one line,
    and the run goes on."""
    photos = examples_dir / "room" / "images"
    out = tmp_path / "windowed"
    fast = ["--device", "cpu", "--dtype", "float32", "--resolution", "112", "--max-frames", "5"]
    args = ["reconstruct", str(photos), "--out", str(out), "--model", "pi3x-tiny", "--window", "3", "--overlap", "1"]
    assert main(args + ["--offload", "--chunk-size", "2"] + fast) == 0
    captured = capsys.readouterr()
    notices = [line for line in captured.err.splitlines() if "reference forward pass" in line]
    assert len(notices) == 1 and "--chunk-size, --offload" in notices[0]
    assert "2 windows" in captured.out and "metric scale" in captured.out
    assert check_output_folder(out, 5)["metric"] is True


def test_viewer_shows_a_family_model_output(examples_dir, tmp_path):
    from conftest import free_port

    from vggt.apps.viewer import SceneViewer
    from vggt.pipeline.reconstruction import Reconstruction

    out = tmp_path / "pi3x"
    assert main(["reconstruct", str(examples_dir / "kitchen" / "images"), "--out", str(out), "--model", "pi3x-tiny"]
                + FAST) == 0  # fmt: skip
    rec = Reconstruction.load(out)
    assert rec.predictions.metric and rec.num_frames == 3
    viewer = SceneViewer(rec, "127.0.0.1", free_port())
    try:
        assert len(viewer.points.points) == rec.num_points > 0 and len(viewer.frustums) == 3
    finally:
        viewer.stop()
