"""`vggt.reconstruct` and `Reconstruction` (vggt.pipeline.api, vggt.pipeline.reconstruction) on CPU with the tiny model.

One tiny model (the golden weights) and one reconstruction of ../shared/data/examples/room are shared by the
module; the model runs at a reduced input resolution to keep the suite fast.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vggt.errors import SceneFormatError
from vggt.pipeline import (
    InputError,
    Reconstruction,
    reconstruct,
    tracked_points,
)
from vggt.utils.cameras import Cameras
from vggt.utils.pose_enc import pose_encoding_to_extri_intri

pycolmap = pytest.importorskip("pycolmap")
trimesh = pytest.importorskip("trimesh")
cv2 = pytest.importorskip("cv2")

RESOLUTION = 224  # model input width: 224 x 168 for the 4:3 room photos
MAX_POINTS = 2000
CONF_PERCENTILE = 50.0


@pytest.fixture(scope="module")
def room_images(examples_dir) -> Path:
    return examples_dir / "room" / "images"


@pytest.fixture(scope="module")
def room(golden_model, room_images) -> Reconstruction:
    return reconstruct(
        room_images,
        model=golden_model,
        device="cpu",
        dtype="float32",
        resolution=RESOLUTION,
        max_points=MAX_POINTS,
        conf_percentile=CONF_PERCENTILE,
    )


@pytest.fixture(scope="module")
def room_out(room, tmp_path_factory) -> Path:
    return room.save(tmp_path_factory.mktemp("room") / "out")


def project(extrinsic: np.ndarray, intrinsic: np.ndarray, points: np.ndarray) -> np.ndarray:
    pix = (points @ extrinsic[:, :3].T + extrinsic[:, 3]) @ intrinsic.T
    return pix[:, :2] / pix[:, 2:]


# ------------------------------------------------------------------------------------------------ room outputs


def test_outputs_layout(room_out, room_images):
    names = sorted(p.name for p in room_images.iterdir())
    assert sorted(p.name for p in (room_out / "images").iterdir()) == names
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (room_out / "sparse" / "0" / name).is_file()
    for name in ("points.ply", "scene.glb", "cameras.json", "predictions.npz"):
        assert (room_out / name).is_file()
    stems = sorted(Path(n).stem for n in names)
    assert sorted(p.stem for p in (room_out / "depth").glob("*.npy")) == stems
    assert sorted(p.stem for p in (room_out / "depth").glob("*.png")) == stems
    # Nothing left behind by the staging folder.
    assert [p.name for p in room_out.parent.iterdir()] == ["out"]


def test_colmap_model_reads_back_with_original_resolution(room_out, room, room_images):
    model = pycolmap.Reconstruction(str(room_out / "sparse" / "0"))
    assert model.num_reg_images() == 8
    assert 0 < model.num_points3D() == len(room.colmap_cloud.points) <= room.num_points
    depth_h, depth_w = room.depth.shape[1:]
    for image in model.images.values():
        width, height = Image.open(room_images / image.name).size
        camera = model.cameras[image.camera_id]
        assert (camera.width, camera.height) == (width, height)
        i = room.image_names.index(image.name)
        if image.name == "no_overlap_1.png":
            assert (camera.width, camera.height) == (512, 384)
        # Intrinsics rescaled from the model input (depth_w x depth_h) to the photo.
        fx, fy, cx, cy = camera.params
        model_K = room.model_intrinsics[i]
        np.testing.assert_allclose(fx, model_K[0, 0] * width / depth_w, rtol=0.01)
        np.testing.assert_allclose(fy, model_K[1, 1] * height / depth_h, rtol=0.01)
        assert abs(cx - width / 2) < 0.01 * width and abs(cy - height / 2) < 0.01 * height
        np.testing.assert_allclose(image.cam_from_world().matrix(), room.extrinsics[i], atol=1e-5)

    # Each point is seen at least twice, with its mean reprojection error, and projects onto the pixel it was
    # unprojected from (the first of its track), in original-photo coordinates.
    for point_id, point in list(model.points3D.items())[:200]:
        assert point.track.length() >= 2 and point.error >= 0
        assert any(np.allclose(point.xyz, p, atol=1e-5) for p in room.points)
        element = point.track.elements[0]
        image = model.images[element.image_id]
        camera = model.cameras[image.camera_id]
        fx, fy, cx, cy = camera.params
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        xy = project(image.cam_from_world().matrix(), K, np.asarray(point.xyz)[None])[0]
        observed = image.points2D[element.point2D_idx]
        assert observed.point3D_id == point_id
        np.testing.assert_allclose(xy, observed.xy, atol=0.05)


def test_ply_has_the_documented_vertex_count(room_out, room):
    # Documented: min(--max-points, pixels at or above the --conf-percentile percentile of the confidence).
    conf = room.depth_conf
    kept = int((conf >= np.percentile(conf, CONF_PERCENTILE)).sum())
    assert kept > MAX_POINTS
    data = (room_out / "points.ply").read_bytes()
    assert f"element vertex {MAX_POINTS}\n".encode() in data[: data.index(b"end_header")]
    cloud = trimesh.load(room_out / "points.ply")
    assert len(cloud.vertices) == MAX_POINTS
    np.testing.assert_allclose(cloud.vertices, room.points, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(cloud.colors)[:, :3], room.colors)


def test_glb_has_points_and_eight_frustums(room_out, room):
    scene = trimesh.load(room_out / "scene.glb")
    assert len(scene.geometry["points"].vertices) == room.num_points
    frustums = [name for name in scene.geometry if name.startswith("camera_")]
    assert len(frustums) == 8
    assert all(len(scene.geometry[name].vertices) == 5 for name in frustums)


def test_cameras_json_agrees_with_predictions(room_out, room_images):
    cameras = json.loads((room_out / "cameras.json").read_text())["images"]
    predictions = np.load(room_out / "predictions.npz")
    names = list(predictions["image_names"])
    assert [c["file_name"] for c in cameras] == names
    depth = predictions["depth"]
    num_frames, height, width = depth.shape[:3]
    assert num_frames == 8 and predictions["pose_enc"].shape == (8, 9)
    assert predictions["world_points"].shape == (8, height, width, 3)
    assert predictions["images"].shape == (8, 3, height, width) and predictions["images"].dtype == np.uint8

    extrinsics, _ = pose_encoding_to_extri_intri(torch.from_numpy(predictions["pose_enc"]), (height, width))
    for i, camera in enumerate(cameras):
        photo_w, photo_h = Image.open(room_images / camera["file_name"]).size
        assert (camera["width"], camera["height"]) == (photo_w, photo_h)
        assert predictions["image_wh"][i].tolist() == [photo_w, photo_h]
        np.testing.assert_allclose(camera["extrinsic"], extrinsics[i].numpy(), atol=1e-6)
        np.testing.assert_allclose(camera["extrinsic"], predictions["extrinsic"][i], atol=1e-6)
        # The original-resolution intrinsic is the model one scaled by photo / model size.
        K, model_K = np.asarray(camera["intrinsic"]), predictions["intrinsic"][i]
        np.testing.assert_allclose(K[0, 0] / model_K[0, 0], photo_w / width, rtol=0.01)
        np.testing.assert_allclose(K[1, 1] / model_K[1, 1], photo_h / height, rtol=0.01)
        # Depth at the photo's resolution: nearest samples of the model's depth (no cropping at 4:3).
        original_depth = np.load(room_out / camera["depth_file"])
        assert original_depth.shape == (photo_h, photo_w)
        assert original_depth[0, 0] == depth[i, 0, 0, 0] and original_depth[-1, -1] == depth[i, -1, -1, 0]
        assert np.isin(original_depth, depth[i]).all()


def test_depth_files(room_out, room_images):
    depth = np.load(room_out / "depth" / "no_overlap_3.npy")
    assert depth.dtype == np.float32 and depth.shape == (960, 1280)
    assert (depth > 0).all()
    preview = Image.open(room_out / "depth_preview" / "no_overlap_3.png")
    assert preview.mode == "RGB" and preview.size == (1280, 960)
    # depth/<stem>.png is what nerfstudio's COLMAP dataparser (1.1.5, depths_path=depth) opens for no_overlap_3.jpg
    # and reads as get_depth_image_from_path does: cv2.IMREAD_ANYDEPTH, times depth_unit_scale_factor 1e-3.
    png = cv2.imread(str(room_out / "depth" / Path("no_overlap_3.jpg").with_suffix(".png")), cv2.IMREAD_ANYDEPTH)
    assert png.dtype == np.uint16 and png.shape == depth.shape
    np.testing.assert_allclose(png.astype(np.float64) * 1e-3, depth, atol=5e-4 + 1e-7)


def test_output_reads_back_as_a_scene_folder(room_out, room):
    """The output is also a scene folder of vggt.data (cameras.json + images/ + depth/)."""
    from vggt.data.scene import load_scene

    scene = load_scene(room_out, load_data=False)
    assert scene.image_names == room.image_names
    np.testing.assert_allclose(scene.extrinsics, room.extrinsics, atol=1e-6)
    np.testing.assert_allclose(scene.intrinsics, room.intrinsics, rtol=1e-6)
    frame = scene.read_frame(0)
    assert frame.depth.shape == frame.image.shape[:2] == (384, 512)


# ------------------------------------------------------------------------------------------------ saving


def test_save_refuses_non_empty_output_and_overwrite_replaces(room, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        room.save(out)
    with pytest.raises(InputError, match=r"not an earlier output of vggt .*would delete what it holds \(keep.txt\)"):
        room.save(out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    room.save(out)
    (out / "points.ply").unlink()
    room.save(out, overwrite=True)
    assert (out / "points.ply").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_midway_leaves_nothing_half_written(room, tmp_path, monkeypatch):
    def fail(self, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Reconstruction, "to_glb", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        room.save(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "existing"
    monkeypatch.undo()
    room.save(existing)
    monkeypatch.setattr(Reconstruction, "to_glb", fail)
    (existing / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        room.save(existing, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]
    assert (existing / "old.txt").read_text() == "old"


def test_summary_line(room):
    line = room.summary("somewhere")
    assert "8 frames" in line and f"{MAX_POINTS} points" in line and "somewhere" in line
    assert "\n" not in line


# ------------------------------------------------------------------------------------------------ image formats


def write_format_zoo(folder: Path) -> dict[str, tuple[int, int]]:
    """Small photos in awkward formats; returns their upright (width, height)."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "plain.jpg")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    rgba = np.concatenate([rgb, np.full((48, 64, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb).convert("L").save(folder / "gray.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees clockwise
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif)
    (folder / "notes.txt").write_text("not an image")
    sizes = {name: (64, 48) for name in ("plain.jpg", "palette.png", "alpha.png", "gray.jpg", "sixteen.png")}
    sizes["cmyk.jpg"] = (64, 48)
    sizes["rotated.jpg"] = (48, 64)
    return sizes


def test_awkward_formats_mixed_sizes_and_pointmap(golden_model, tmp_path, caplog):
    sizes = write_format_zoo(tmp_path / "zoo")
    assert Image.open(tmp_path / "zoo" / "sixteen.png").mode.startswith("I")
    with caplog.at_level("WARNING", logger="vggt"):
        rec = reconstruct(
            tmp_path / "zoo", model=golden_model, device="cpu", dtype="float32", resolution=56, points="pointmap"
        )
    assert "notes.txt" in caplog.text  # skipped and listed
    assert sorted(rec.image_names) == sorted(sizes)
    assert [tuple(s) for s in rec.image_wh] == [sizes[n] for n in rec.image_names]

    # Point-map points are the point head's outputs at the pixels they came from.
    world_points = rec.predictions["world_points"]
    obs = rec.observations
    for m in range(0, len(obs), 97):
        i = obs.image_index[m]
        x, y = np.round(rec.transforms[i].original_to_input(obs.xy[m])).astype(int)
        np.testing.assert_allclose(rec.points[obs.point_index[m]], world_points[i, y, x], rtol=1e-6)

    out = rec.save(tmp_path / "out")
    copied = Image.open(out / "images" / "rotated.jpg")
    assert copied.size == (48, 64) and copied.getexif().get(0x0112, 1) == 1  # upright
    assert Image.open(out / "images" / "cmyk.jpg").mode == "RGB"
    assert Image.open(out / "images" / "sixteen.png").mode == "RGB"
    assert (out / "images" / "plain.jpg").read_bytes() == (tmp_path / "zoo" / "plain.jpg").read_bytes()
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    for image in model.images.values():
        camera = model.cameras[image.camera_id]
        assert (camera.width, camera.height) == sizes[image.name]


def test_corrupt_image_is_named(golden_model, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    Image.new("RGB", (32, 24)).save(folder / "ok.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        reconstruct(folder, model=golden_model, device="cpu", dtype="float32", resolution=56)


# ------------------------------------------------------------------------------------------------ point selection


def assert_same_cloud(actual, expected) -> None:
    np.testing.assert_array_equal(actual.points, expected.points)
    np.testing.assert_array_equal(actual.colors, expected.colors)
    np.testing.assert_array_equal(actual.observations.image_index, expected.observations.image_index)
    np.testing.assert_array_equal(actual.observations.xy, expected.observations.xy)


def test_select_is_the_pipeline_selection_without_the_model(room, golden_model, room_images):
    stricter = room.select(conf_percentile=80, max_points=None)
    direct = reconstruct(
        room_images,
        model=golden_model,
        device="cpu",
        dtype="float32",
        resolution=RESOLUTION,
        conf_percentile=80,
        max_points=None,
    )
    assert_same_cloud(stricter, direct)
    assert stricter.selection == direct.selection
    assert room.selection.conf_percentile == CONF_PERCENTILE and room.num_points == MAX_POINTS  # room is unchanged
    valid = room.num_frames * 168 * RESOLUTION
    assert 0.19 * valid < stricter.num_points < 0.21 * valid  # ties at the threshold are kept
    assert_same_cloud(room.select(), room)


def test_select_frames_background_and_point_map(room):
    some = room.select(frames=[1, 3], max_points=None, conf_percentile=0)
    assert set(some.observations.image_index.tolist()) == {1, 3}
    assert some.selection.frames == (1, 3) and some.selection.max_points is None
    masked = some.select(mask_black_background=True, mask_white_background=True)
    colors = masked.colors.astype(int)
    assert (colors.sum(-1) >= 16).all() and not (colors > 240).all(-1).any()
    assert masked.num_points < some.num_points  # the room photos have dark and bright pixels

    pointmap = room.select(points="pointmap")
    assert pointmap.points_source == "pointmap" and room.points_source == "depth"
    world_points, obs = room.predictions["world_points"], pointmap.observations
    for m in range(0, len(obs), 97):
        i = obs.image_index[m]
        x, y = np.round(room.transforms[i].original_to_input(obs.xy[m])).astype(int)
        np.testing.assert_allclose(pointmap.points[obs.point_index[m]], world_points[i, y, x], rtol=1e-6)
    for bad, match in [
        ({"frames": [8]}, "frames must be frame indices in 0..7"),
        ({"points": "mesh"}, "unknown points source 'mesh'"),
        ({"colour": 1}, "unknown point selection colour"),
        ({"conf_percentile": 100}, "conf_percentile must be in"),
    ]:
        with pytest.raises(InputError, match=match):
            room.select(**bad)


# ------------------------------------------------------------------------------------------------ reading back


def assert_same_reconstruction(loaded: Reconstruction, saved: Reconstruction) -> None:
    assert loaded.image_names == saved.image_names
    np.testing.assert_array_equal(loaded.extrinsics, saved.extrinsics)
    np.testing.assert_allclose(loaded.intrinsics, saved.intrinsics, rtol=1e-6)
    np.testing.assert_array_equal(loaded.image_wh, saved.image_wh)
    np.testing.assert_array_equal(loaded.model_intrinsics, saved.model_intrinsics)
    np.testing.assert_array_equal(loaded.depth, saved.depth)
    np.testing.assert_array_equal(loaded.depth_conf, saved.depth_conf)
    np.testing.assert_array_equal(loaded.predictions.images, saved.predictions.images)
    assert loaded.transforms == saved.transforms
    assert loaded.selection == saved.selection and loaded.points_source == saved.points_source
    assert_same_cloud(loaded, saved)


def test_save_then_load_gives_the_same_reconstruction(room, room_out, tmp_path):
    loaded = Reconstruction.load(room_out)
    assert_same_reconstruction(loaded, room)
    assert [p.read_bytes() for p in loaded.image_paths] == [
        (room_out / "images" / n).read_bytes() for n in room.image_names
    ]
    assert loaded.seconds == pytest.approx(room.seconds)
    assert_same_cloud(loaded.select(conf_percentile=70), room.select(conf_percentile=70))

    chosen = room.select(points="pointmap", frames=[0, 5], mask_white_background=True, max_points=None)
    assert_same_reconstruction(Reconstruction.load(chosen.save(tmp_path / "chosen")), chosen)


def test_predictions_npz_says_which_cameras_cameras_json_holds(room, tmp_path):
    """`extrinsic` / `intrinsic` stay the feed-forward cameras; `model_extrinsic` / `model_intrinsic` are those of
    cameras.json (on the model grid), refined ones included (here: moved as bundle adjustment would move them)."""
    moved = room.extrinsics.copy()
    moved[1:, :, 3] += 0.25
    cameras = Cameras(room.image_names, moved, room.cameras.intrinsics, room.image_wh)
    refined = dataclasses.replace(room, cameras=cameras)
    out = refined.save(tmp_path / "refined")
    predictions = np.load(out / "predictions.npz")
    written = np.array([camera["extrinsic"] for camera in json.loads((out / "cameras.json").read_text())["images"]])
    np.testing.assert_allclose(predictions["model_extrinsic"], written, atol=1e-6)
    np.testing.assert_allclose(predictions["extrinsic"], room.predictions.extrinsics)
    assert not np.allclose(predictions["extrinsic"], written, atol=1e-3)
    np.testing.assert_allclose(predictions["model_intrinsic"], room.model_intrinsics)


def test_bundle_adjusted_points_are_read_back(room, tmp_path):
    images = room.predictions["images"].transpose(0, 2, 3, 1)
    tracks = np.stack([project(room.extrinsics[i], room.model_intrinsics[i], room.points[:10]) for i in range(8)])
    sparse = tracked_points(room.points[:10], tracks, np.ones((8, 10), bool), images, room.transforms)
    adjusted = dataclasses.replace(room, sparse=sparse)
    loaded = Reconstruction.load(adjusted.save(tmp_path / "ba"))
    assert loaded.bundle_adjusted
    for actual, expected in zip(loaded.sparse[:2], sparse[:2]):
        np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(loaded.sparse.observations.xy, sparse.observations.xy)


def test_load_names_what_is_wrong(room_out, tmp_path):
    with pytest.raises(InputError, match="is not a folder"):
        Reconstruction.load(tmp_path / "absent")
    with pytest.raises(InputError, match="has no predictions.npz"):
        Reconstruction.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "predictions.npz").write_bytes(b"not a zip")
    with pytest.raises(SceneFormatError, match="predictions.npz: cannot be read"):
        Reconstruction.load(broken)
    np.savez(broken / "predictions.npz", depth=np.zeros((1, 2, 2, 1)))
    with pytest.raises(SceneFormatError, match="lacks"):
        Reconstruction.load(broken)


# ------------------------------------------------------------------------------------------------ inputs


# ------------------------------------------------------------------------------------------------ device, memory


def test_reconstruct_rejects_bad_options(golden_model, room_images):
    with pytest.raises(InputError, match="points"):
        reconstruct(room_images, model=golden_model, points="mesh")
    with pytest.raises(InputError, match="conf_percentile"):
        reconstruct(room_images, model=golden_model, conf_percentile=100)
    with pytest.raises(InputError, match="resolution"):
        reconstruct(room_images, model=golden_model, device="cpu", resolution=100)


# ------------------------------------------------------------------------------------------------ bundle adjustment


def test_bundle_adjusted_tracks_go_into_the_colmap_model(room, tmp_path):
    """After BA the COLMAP model holds the tracked points, each with all of its 2D observations."""
    num_frames = room.num_frames
    points3d = room.points[:40].astype(np.float64)
    tracks = np.stack([project(room.extrinsics[i], room.model_intrinsics[i], points3d) for i in range(num_frames)])
    mask = np.ones((num_frames, len(points3d)), dtype=bool)
    mask[2:, 0] = False  # point 0: seen twice
    mask[1:, 1] = False  # point 1: seen once, left out
    images = room.predictions["images"].transpose(0, 2, 3, 1)
    sparse = tracked_points(points3d, tracks, mask, images, room.transforms)
    assert len(sparse[0]) == len(points3d) - 1
    adjusted = dataclasses.replace(room, sparse=sparse)
    assert adjusted.bundle_adjusted

    adjusted.to_colmap(tmp_path, copy_images=False)
    model = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    assert model.num_points3D() == len(points3d) - 1
    lengths = sorted(point.track.length() for point in model.points3D.values())
    assert lengths == [2] + [num_frames] * (len(points3d) - 2)
    for point in model.points3D.values():
        for element in point.track.elements:
            image = model.images[element.image_id]
            fx, fy, cx, cy = model.cameras[image.camera_id].params
            K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
            expected = project(image.cam_from_world().matrix(), K, np.asarray(point.xyz)[None])[0]
            np.testing.assert_allclose(image.points2D[element.point2D_idx].xy, expected, rtol=1e-4, atol=0.05)


def test_bundle_adjustment_falls_back_when_no_track_survives(golden_model, tmp_path, caplog):
    pytest.importorskip("theseus")
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    with caplog.at_level("WARNING", logger="vggt"):
        rec = reconstruct(
            folder,
            model=golden_model,
            device="cpu",
            dtype="float32",
            resolution=56,
            bundle_adjust=True,
            ba_options={"num_reference_frames": 1, "query_points_per_frame": 32},
        )
    # Random weights track nothing reliably: the feed-forward cameras are kept, with a warning.
    assert "bundle adjustment skipped" in caplog.text
    assert not rec.bundle_adjusted
    np.testing.assert_allclose(rec.extrinsics, rec.predictions["extrinsic"])
