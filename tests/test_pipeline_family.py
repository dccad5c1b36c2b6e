"""`vggt reconstruct --model NAME` and `vggt.reconstruct(model=NAME)` with every model of the family (small
presets, random weights) on the example photos: a complete output folder read back by pycolmap, trimesh and
numpy, cameras in the first camera's frame, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

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
    first window's frame and (metric) scale, with the streaming engine's options applied (no notice)."""
    photos = examples_dir / "room" / "images"
    out = tmp_path / "windowed"
    fast = ["--device", "cpu", "--dtype", "float32", "--resolution", "112", "--max-frames", "5"]
    args = ["reconstruct", str(photos), "--out", str(out), "--model", "pi3x-tiny", "--window", "3", "--overlap", "1"]
    assert main(args + ["--offload", "--chunk-size", "2"] + fast) == 0
    captured = capsys.readouterr()
    assert "ignored" not in captured.err
    assert "2 windows" in captured.out and "metric scale" in captured.out
    assert check_output_folder(out, 5)["metric"] is True


@pytest.mark.parametrize("model", ["pi3-tiny", "vggt-omega-tiny"])
def test_streaming_options_reach_a_family_model(examples_dir, tmp_path, capsys, model):
    """The command line streams a family model with the chunks, offload and fast mode asked for (the log says
    how); chunks and offload give the numbers of the automatic chunks."""
    photos = examples_dir / "kitchen" / "images"
    depth = {}
    runs = {"auto": [], "chunked": ["--chunk-size", "1", "--offload"], "fast": ["--merge-ratio", "0.5"]}
    for label, extra in runs.items():
        out = tmp_path / label
        torch.manual_seed(0)  # the same random weights in each run
        assert main(["reconstruct", str(photos), "--out", str(out), "--model", model, "-v"] + FAST + extra) == 0
        depth[label] = np.load(out / "depth" / sorted(p.name for p in (out / "depth").glob("*.npy"))[0])
        (line,) = [line for line in capsys.readouterr().err.splitlines() if "running on" in line]
        assert "streaming" in line
        if label == "chunked":
            assert "1 frames per chunk, offload" in line
        if label == "fast":
            assert "merge ratio 0.5" in line
    np.testing.assert_allclose(depth["chunked"], depth["auto"], rtol=1e-4, atol=1e-5)


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


# ----------------------------------------------------------------------------------- Pi3X's conditioning inputs

TRAINED_PI3X = Path(__file__).parent / "data" / "pi3x_tiny_rays.safetensors"


def conditioning_photos(folder, count: int = 3, side: int = 56):
    """Random photos, one calibration for all (JSON) and a depth folder (the first photo's depth only)."""
    from PIL import Image

    photos, depth = folder / "photos", folder / "depth"
    photos.mkdir(parents=True)
    depth.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    np.save(depth / "p0.npy", np.full((side, side), 2.5, np.float32))
    camera = {"width": side, "height": side, "fx": 40.0, "fy": 40.0, "cx": side / 2 - 0.5, "cy": side / 2 - 0.5}
    intrinsics = folder / "intrinsics.json"
    intrinsics.write_text(json.dumps({"camera": camera}))
    return photos, intrinsics, depth


def test_pi3x_reads_known_intrinsics_and_depth(tmp_path, capsys):
    """--intrinsics and --depth reach Pi3X's network (its points change); --depth is refused in one line where
    the model does not take it, and so is --poses given a file that is not a poses file (tests/test_pipeline_poses.py
    covers --poses)."""
    photos, intrinsics, depth = conditioning_photos(tmp_path)
    base = ["--device", "cpu", "--dtype", "float32", "--resolution", "56", "-q", "--model"]
    points = {}
    for name, extra in {
        "none": [],
        "intrinsics": ["--intrinsics", str(intrinsics)],
        "depth": ["--depth", str(depth)],
    }.items():
        out = tmp_path / f"out_{name}"
        assert main(["reconstruct", str(photos), "--out", str(out), *base, "pi3x-tiny", *extra]) == 0
        points[name] = np.load(out / "predictions.npz")["world_points"]
    assert not np.allclose(points["intrinsics"], points["none"]) and not np.allclose(points["depth"], points["none"])
    # A windowed run gives each window's intrinsics to the network too.
    windowed = ["--intrinsics", str(intrinsics), "--window", "2", "--overlap", "1"]
    for name, extra in {"windowed": windowed[2:], "windowed_intrinsics": windowed}.items():
        assert main(["reconstruct", str(photos), "--out", str(tmp_path / name), *base, "pi3x-tiny", *extra]) == 0
    with_known, without = (
        np.load(tmp_path / name / "predictions.npz")["depth"] for name in ("windowed_intrinsics", "windowed")
    )
    assert not np.allclose(with_known[0], without[0])  # the first window's frame: its depth as predicted
    capsys.readouterr()
    refusals = {
        "pi3-tiny": ["--depth", str(depth)],
        "pi3x-tiny": ["--poses", str(intrinsics)],
    }
    for model, extra in refusals.items():
        assert main(["reconstruct", str(photos), "--out", str(tmp_path / "no"), *base, model, *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and extra[0] in error
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(not TRAINED_PI3X.is_file(), reason="tests/data/pi3x_tiny_rays.safetensors is missing")
def test_conditioning_on_true_intrinsics_moves_the_prediction_toward_them():
    """A small Pi3X trained to read its intrinsics (scripts/train_pi3x_tiny_rays.py) on synthetic scenes whose
    images say nothing about the camera: given the true intrinsics, the focal lengths fitted to its predicted
    points are close to them; without, they are an average guess, far from them."""
    from vggt.models.registry import create_model
    from vggt.pipeline.family import conditioning_inputs
    from vggt.pipeline.inference import InferenceOptions, run_inference

    model = create_model("pi3x-tiny", checkpoint=TRAINED_PI3X)
    generator = torch.Generator().manual_seed(1)  # other scenes than the training ones
    side, num_frames, options = 42, 2, InferenceOptions(memory_check=False)
    errors = {"with": [], "without": []}
    for _ in range(4):
        focal = side * (0.5 + 1.5 * torch.rand(num_frames, generator=generator))
        intrinsics = np.zeros((num_frames, 3, 3), np.float32)
        intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focal.numpy()
        intrinsics[:, :2, 2] = side / 2 - 0.5  # centred, in this package's pixel convention
        intrinsics[:, 2, 2] = 1
        images = torch.rand(num_frames, 3, side, side, generator=generator)
        conditioning = conditioning_inputs(intrinsics, None, (side, side))
        for key, given in (("with", conditioning), ("without", None)):
            predictions = run_inference(model, images, options, conditioning=given)
            fitted = predictions.intrinsics[:, 0, 0]
            errors[key].append(np.abs(fitted - focal.numpy()) / focal.numpy())
    error_with, error_without = np.mean(errors["with"]), np.mean(errors["without"])
    assert error_with < 0.15 and error_with < 0.5 * error_without, errors


def test_evaluate_with_a_family_model(tmp_path):
    """`vggt evaluate --model`: scores a model without a track head on a scene with tracks (tracks left out)."""
    data, out = tmp_path / "data", tmp_path / "eval"
    assert main(["synthesize", "--out", str(data), "--num-scenes", "1", "--num-frames", "3", "--num-tracks", "8"]) == 0
    args = ["evaluate", "--data", str(data), "--out", str(out), "--model", "pi3-tiny", "-q"]
    assert main(args + ["--device", "cpu", "--dtype", "float32", "--resolution", "56"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["model"] == "pi3-tiny" and {"camera", "depth", "points"} <= set(report["overall"])
    assert "tracks" not in report["overall"]


def test_demo_runner_with_a_family_model(examples_dir):
    """The demo's model runner (`vggt demo --model`) loads a registry model and reconstructs with it."""
    from vggt.apps.runner import ModelRunner

    runner = ModelRunner.load(None, None, "cpu", "float32", model_name="vggt-omega-tiny", resolution=64)
    photos = sorted((examples_dir / "kitchen" / "images").iterdir())[:2]
    rec = runner.reconstruct(photos)
    assert runner.runs == 1 and rec.num_frames == 2 and rec.num_points > 0
    assert rec.predictions.input_hw[1] == 64
