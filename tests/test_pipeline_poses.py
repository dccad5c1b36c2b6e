"""Known camera poses (`--poses FILE` / `vggt.reconstruct(poses=...)`): the file formats (JSON both ways, COLMAP
images.txt / images.bin / model folder), the similarity that moves a prediction into the poses' frame, Pi3X's
network reading them, complete output folders in the poses' frame for Pi3X, VGGT-Omega and VGGT, and the one-line
refusals of bad files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline_family import conditioning_photos

from vggt.cli.main import main
from vggt.data.poses import read_poses
from vggt.errors import InputError, PredictionError
from vggt.pipeline.calibration import apply_known_poses, fit_to_poses, known_poses
from vggt.pipeline.inference import Predictions
from vggt.pipeline.inputs import collect_inputs
from vggt.utils.geometry import closed_form_inverse_se3
from vggt.utils.rotation import mat_to_quat
from vggt.utils.similarity import Similarity, rotation_exp

BASE = ["--device", "cpu", "--dtype", "float32", "--resolution", "56", "-q"]


def random_poses(count: int, seed: int = 0) -> np.ndarray:
    """Camera-to-world [count, 4, 4]: random rotations, centres a few units apart."""
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (count, 1, 1))
    poses[:, :3, :3] = rotation_exp(rng.normal(size=(count, 3)))
    poses[:, :3, 3] = rng.normal(scale=3.0, size=(count, 3)) + np.array([100.0, -50.0, 20.0])
    return poses


def write_json(path, poses: dict, key: str = "camera_to_world") -> None:
    path.write_text(json.dumps({"poses": {name: {key: m.tolist()} for name, m in poses.items()}}))


def colmap_fields(camera_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP's (qw, qx, qy, qz) and translation of a camera-to-world pose."""
    world_to_camera = closed_form_inverse_se3(camera_to_world)
    xyzw = mat_to_quat(torch.from_numpy(world_to_camera[:3, :3])).numpy()
    return np.roll(xyzw, 1), world_to_camera[:3, 3]


def write_images_txt(path, poses: dict) -> None:
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
    ]
    for i, (name, pose) in enumerate(poses.items()):
        q, t = colmap_fields(pose)
        lines += [" ".join(str(v) for v in (i + 1, *q, *t, 1, name)), "" if i % 2 else "10.0 20.0 -1"]
    path.write_text("\n".join(lines) + "\n")


def write_images_bin(path, poses: dict) -> None:
    data = struct.pack("<Q", len(poses))
    for i, (name, pose) in enumerate(poses.items()):
        q, t = colmap_fields(pose)
        data += struct.pack("<I7dI", i + 1, *q, *t, 1) + name.encode() + b"\x00"
        data += struct.pack("<Q", 1) + struct.pack("<ddq", 1.0, 2.0, -1)
    path.write_bytes(data)


# ------------------------------------------------------------------------------------------------ file formats


@pytest.mark.parametrize("form", ["camera_to_world", "world_to_camera", "images.txt", "images.bin", "model"])
def test_every_format_reads_the_same_camera_to_world_poses(tmp_path, form):
    poses = random_poses(2)
    given = {"a.jpg": poses[0], "sub/b.png": poses[1]}
    if form == "camera_to_world":
        write_json(path := tmp_path / "poses.json", given)
    elif form == "world_to_camera":
        write_json(path := tmp_path / "poses.json", {k: closed_form_inverse_se3(v)[:3] for k, v in given.items()}, form)
    elif form == "model":
        write_images_bin(tmp_path / "images.bin", given)
        path = tmp_path
    else:
        (write_images_txt if form == "images.txt" else write_images_bin)(path := tmp_path / form, given)
    known = read_poses(path, ["a.jpg", "b.png", "c.jpg"])  # b.png matches "sub/b.png" by file name
    np.testing.assert_allclose(known.camera_to_world[:2], poses, atol=1e-9)
    assert known.known.tolist() == [True, True, False] and np.isnan(known.camera_to_world[2]).all()


def test_poses_of_photos_that_do_not_exist_are_named(tmp_path):
    write_json(path := tmp_path / "poses.json", {"a.jpg": np.eye(4), "ghost.jpg": np.eye(4)})
    with pytest.raises(InputError, match="ghost.jpg"):
        read_poses(path, ["a.jpg", "b.jpg"])


def test_poses_of_photos_left_out_by_max_frames_are_skipped(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    names = [f"{i}.png" for i in range(5)]
    for name in names:
        Image.new("RGB", (8, 8)).save(photos / name)
    poses = random_poses(5)
    write_json(path := tmp_path / "poses.json", dict(zip(names, poses)))
    collected = collect_inputs(photos, max_frames=3)
    assert [p.name for p in collected.left_out] == ["1.png", "3.png"]
    known = known_poses(path, collected)
    np.testing.assert_allclose(known.camera_to_world, poses[[0, 2, 4]])
    collected.left_out = []  # a name matching no input photo at all is still refused
    with pytest.raises(InputError, match="1.png"):
        known_poses(path, collected)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"poses": {"a.jpg": {"camera_to_world": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}}}, "not a rotation"),
        ({"poses": {"a.jpg": {"camera_to_world": [[1, 0, 0], [0, 1, 0]]}}}, "4 x 4 or 3 x 4"),
        (
            {"poses": {"a.jpg": {"camera_to_world": np.eye(4).tolist(), "world_to_camera": np.eye(4).tolist()}}},
            "one of",
        ),
        ({"poses": {"a.jpg": {"pose": np.eye(4).tolist()}}}, "one of"),
        ({"cameras": {}}, "'poses'"),
    ],
)
def test_bad_json_is_one_input_error(tmp_path, content, match):
    (path := tmp_path / "poses.json").write_text(json.dumps(content))
    with pytest.raises(InputError, match=match):
        read_poses(path, ["a.jpg"])


def test_broken_colmap_files_are_input_errors(tmp_path):
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0\n")
    with pytest.raises(InputError, match="not a COLMAP images file"):
        read_poses(tmp_path / "images.txt", ["a.jpg"])
    (tmp_path / "images.bin").write_bytes(struct.pack("<Q", 3))
    with pytest.raises(InputError, match="not a COLMAP images file"):
        read_poses(tmp_path / "images.bin", ["a.jpg"])
    (tmp_path / "poses.yaml").touch()
    with pytest.raises(InputError, match="neither"):
        read_poses(tmp_path / "poses.yaml", ["a.jpg"])


# -------------------------------------------------------------------------------------- moving a prediction


def test_fit_recovers_the_similarity_between_two_sets_of_cameras():
    given = random_poses(3, seed=1)
    move = Similarity(2.5, rotation_exp(np.array([0.3, -0.2, 0.9])), np.array([1.0, 2.0, -3.0]))
    # The predicted cameras are the given ones seen from the other frame: given = move(predicted).
    inverse = move.inverse()
    predicted = np.tile(np.eye(4), (3, 1, 1))
    predicted[:, :3, :3] = inverse.rotation @ given[:, :3, :3]
    predicted[:, :3, 3] = inverse.apply(given[:, :3, 3])
    fitted = fit_to_poses(predicted[:2], given[:2])  # two cameras suffice
    np.testing.assert_allclose(fitted.matrix, move.matrix, atol=1e-9)
    with pytest.raises(PredictionError, match="one place"):
        fit_to_poses(predicted[[0, 0]], given[:2])  # predicted centres coincide


def test_apply_known_poses_moves_depth_points_and_cameras_consistently():
    from vggt.data.poses import KnownPoses

    S, H, W = 3, 4, 5
    rng = np.random.default_rng(2)
    extrinsics = closed_form_inverse_se3(random_poses(S, seed=3))[:, :3].astype(np.float32)
    intrinsics = np.tile(np.array([[4.0, 0, 2], [0, 4.0, 1.5], [0, 0, 1]], np.float32), (S, 1, 1))
    depth = rng.uniform(1, 2, size=(S, H, W)).astype(np.float32)
    world = rng.normal(size=(S, H, W, 3)).astype(np.float32)
    predictions = Predictions(
        images=np.zeros((S, 3, H, W), np.uint8),
        pose_enc=np.zeros((S, 9), np.float32),
        extrinsics=extrinsics,
        intrinsics=intrinsics,
        depth=depth.copy(),
        world_points=world.copy(),
        metric_scale=np.ones(1, np.float32),
    )
    given = random_poses(S, seed=4)
    given[2] = np.nan  # the third photo has no pose
    move = apply_known_poses(predictions, KnownPoses(("a", "b", "c"), given))
    np.testing.assert_allclose(predictions.extrinsics[:2], closed_form_inverse_se3(given[:2])[:, :3], atol=1e-4)
    np.testing.assert_allclose(predictions.extrinsics[2], move.apply_to_extrinsics(extrinsics[2]), atol=1e-3)
    np.testing.assert_allclose(predictions.depth, depth * move.scale, rtol=1e-5)
    np.testing.assert_allclose(predictions.world_points, move.apply(world), rtol=1e-4, atol=1e-3)
    assert predictions.metric_scale is None  # in the poses' units now


# ----------------------------------------------------------------------------------------------- end to end


def test_pi3x_network_reads_the_poses():
    """The same photos with and without poses: Pi3X's depth changes beyond a scale."""
    from vggt.models.registry import create_model
    from vggt.pipeline.family import FamilyConditioning
    from vggt.pipeline.inference import InferenceOptions, run_inference

    torch.manual_seed(0)
    model = create_model("pi3x-tiny")
    images = torch.rand(3, 3, 42, 42, generator=torch.Generator().manual_seed(0))
    options = InferenceOptions(memory_check=False)
    conditioning = FamilyConditioning(poses=torch.from_numpy(random_poses(3)).float())
    plain = run_inference(model, images, options).depth
    posed = run_inference(model, images, options, conditioning=conditioning).depth
    plain, posed = plain / np.median(plain), posed / np.median(posed)
    assert np.abs(plain - posed).max() > 1e-4  # random LayerScale of 0.01: small, but no rounding (0 without)


@pytest.mark.parametrize("model, resolution", [("pi3x-tiny", 56), ("vggt-omega-tiny", 64), ("vggt-tiny", 56)])
def test_reconstruct_in_the_frame_of_given_poses(tmp_path, capsys, model, resolution):
    from test_pipeline_family import check_output_folder

    photos, intrinsics, _ = conditioning_photos(tmp_path)
    poses = random_poses(3, seed=5)
    write_json(path := tmp_path / "poses.json", {"p0.png": poses[0], "p2.png": poses[2]})  # p1 unposed
    out = tmp_path / "out"
    loud = [arg for arg in BASE if arg != "-q"]  # (the notice below is a warning)
    args = ["reconstruct", str(photos), "--out", str(out), *loud, "--model", model, "--poses", str(path)]
    assert main(args + ["--intrinsics", str(intrinsics), "--resolution", str(resolution), "--chunk-size", "1"]) == 0
    notices = [line for line in capsys.readouterr().err.splitlines() if "ignored" in line]
    # Pi3X's pose injection runs in its reference forward pass: the chunks asked for are said to be ignored.
    assert len(notices) == (model == "pi3x-tiny") and all("--chunk-size" in line for line in notices)
    cameras = check_output_folder(out, 3)
    assert "metric" not in cameras  # the units are the poses'
    written = {image["file_name"]: np.array(image["extrinsic"]) for image in cameras["images"]}
    for name, pose in (("p0.png", poses[0]), ("p2.png", poses[2])):
        np.testing.assert_allclose(written[name], closed_form_inverse_se3(pose)[:3], atol=1e-3)
    assert np.isfinite(written["p1.png"]).all()
    # The depth is in the poses' units: the cameras are ~7 units apart, the model's unit scene ~1.
    depth = np.load(out / "depth" / "p1.npy")
    assert np.isfinite(depth).all() and depth.max() > 0


def test_the_python_api_takes_poses(tmp_path):
    import vggt

    photos, _, _ = conditioning_photos(tmp_path)
    poses = random_poses(3, seed=6)
    write_json(path := tmp_path / "poses.json", {f"p{i}.png": poses[i] for i in range(3)})
    rec = vggt.reconstruct(photos, model="pi3x-tiny", poses=str(path), device="cpu", dtype="float32", resolution=56)
    np.testing.assert_allclose(rec.cameras.extrinsics, closed_form_inverse_se3(poses)[:, :3], atol=1e-3)
    assert rec.given_poses == 3 and "given poses" in rec.summary()
    loaded = vggt.Reconstruction.load(rec.save(tmp_path / "out"))
    assert loaded.given_poses == 3 and "given poses" in loaded.summary()


def test_bad_pose_files_are_one_line_and_write_nothing(tmp_path, capsys):
    photos, _, _ = conditioning_photos(tmp_path)
    poses = random_poses(3, seed=7)
    cases = {
        "ghost": ({"p0.png": poses[0], "p1.png": poses[1], "ghost.png": poses[2]}, "ghost.png"),
        "single": ({"p0.png": poses[0]}, "at least two"),
        "same_centre": ({"p0.png": poses[0], "p1.png": poses[0]}, "one camera centre"),
    }
    for name, (content, match) in cases.items():
        write_json(path := tmp_path / f"{name}.json", content)
        out = tmp_path / f"out_{name}"
        args = ["reconstruct", str(photos), "--out", str(out), *BASE, "--model", "pi3x-tiny", "--poses", str(path)]
        assert main(args) == 2, name
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "--poses" in error and match in error, error
        assert not out.exists()
    write_json(path := tmp_path / "poses.json", {"p0.png": poses[0], "p1.png": poses[1]})
    for extra, flag in ((["--window", "2", "--overlap", "1"], "--window"),):
        out = tmp_path / "out_combined"
        args = ["reconstruct", str(photos), "--out", str(out), *BASE, "--model", "vggt-tiny", "--poses", str(path)]
        assert main(args + extra) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and flag in error and "--poses" in error, error
        assert not out.exists()


def test_bundle_adjustment_accepts_given_poses(tmp_path, capsys):
    """VGGT with --ba and --poses: the given cameras are held constant by bundle adjustment (vggt.ba's
    fixed_frames, tests/test_ba_fixed_poses.py) and written as given."""
    photos, _, _ = conditioning_photos(tmp_path)
    poses = random_poses(3, seed=8)
    write_json(path := tmp_path / "poses.json", {"p0.png": poses[0], "p1.png": poses[1]})
    out = tmp_path / "out"
    args = ["reconstruct", str(photos), "--out", str(out), *BASE, "--model", "vggt-tiny", "--poses", str(path)]
    assert main(args + ["--ba", "--ba-backend", "ceres", "--ba-vis-threshold", "1.0"]) == 0
    written = {
        i["file_name"]: np.array(i["extrinsic"]) for i in json.loads((out / "cameras.json").read_text())["images"]
    }
    for i in range(2):
        np.testing.assert_allclose(written[f"p{i}.png"], closed_form_inverse_se3(poses[i])[:3], atol=1e-3)
