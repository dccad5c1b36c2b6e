"""The scene folder format: round trips, validation errors, and the COLMAP importer."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggt.data.colmap_import import COLMAP_PIXEL_CENTER, import_colmap
from vggt.data.scene import SceneFormatError, list_scenes, load_scene, write_scene
from vggt.data.synthetic import generate_scene

NUM_FRAMES, HEIGHT, WIDTH = 3, 28, 42


@pytest.fixture(scope="module")
def synthetic_scene():
    scene = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=11, name="room")
    scene.masks = scene.depths > 0
    return scene


@pytest.fixture
def scene_dir(tmp_path, synthetic_scene) -> Path:
    return write_scene(tmp_path / "room", synthetic_scene)


def test_round_trip_npy(scene_dir, synthetic_scene):
    loaded = load_scene(scene_dir)
    assert loaded.name == "room"
    assert loaded.image_names == synthetic_scene.image_names
    np.testing.assert_array_equal(loaded.images, synthetic_scene.images)
    np.testing.assert_array_equal(loaded.depths, synthetic_scene.depths)
    np.testing.assert_array_equal(loaded.masks, synthetic_scene.masks)
    np.testing.assert_allclose(loaded.intrinsics, synthetic_scene.intrinsics)
    np.testing.assert_allclose(loaded.extrinsics, synthetic_scene.extrinsics)
    assert loaded.image_hw.tolist() == [[HEIGHT, WIDTH]] * NUM_FRAMES


def test_round_trip_png_depth(tmp_path, synthetic_scene):
    scale = 1e-3
    folder = write_scene(tmp_path / "png", synthetic_scene, depth_format="png", depth_scale=scale)
    assert json.loads((folder / "cameras.json").read_text())["depth_scale"] == scale
    assert sorted(p.suffix for p in (folder / "depth").iterdir()) == [".png"] * NUM_FRAMES
    loaded = load_scene(folder)
    np.testing.assert_allclose(loaded.depths, synthetic_scene.depths, atol=scale / 2 + 1e-6)
    np.testing.assert_array_equal(loaded.depths > 0, synthetic_scene.depths > 0)


def test_lazy_load_reads_frames_on_demand(scene_dir, synthetic_scene):
    lazy = load_scene(scene_dir, load_data=False)
    assert lazy.images is None and lazy.depths is None
    frame = lazy.read_frame(1)
    np.testing.assert_array_equal(frame.image, synthetic_scene.images[1])
    np.testing.assert_array_equal(frame.depth, synthetic_scene.depths[1])
    assert load_scene(scene_dir, use_depth=False, use_masks=False).depths is None


def test_reconstruction_output_reads_back(tmp_path, synthetic_scene):
    """The layout `vggt reconstruct` writes: a top-level list, depth/<file name>.npy beside colour previews."""
    folder = tmp_path / "recon"
    (folder / "images").mkdir(parents=True)
    (folder / "depth").mkdir()
    entries = []
    for name, image, depth, intrinsic, extrinsic in zip(
        synthetic_scene.image_names,
        synthetic_scene.images,
        synthetic_scene.depths,
        synthetic_scene.intrinsics,
        synthetic_scene.extrinsics,
    ):
        jpg = name.replace(".png", ".jpg")
        Image.fromarray(image).save(folder / "images" / jpg)
        np.save(folder / "depth" / (jpg + ".npy"), depth)
        Image.fromarray(image).save(folder / "depth" / (jpg + ".png"))  # an 8-bit colour preview
        entries.append(
            {
                "file_name": jpg,
                "width": WIDTH,
                "height": HEIGHT,
                "extrinsic": extrinsic.tolist(),
                "intrinsic": intrinsic.tolist(),
            }
        )
    (folder / "cameras.json").write_text(json.dumps(entries))
    loaded = load_scene(folder)
    np.testing.assert_array_equal(loaded.depths, synthetic_scene.depths)
    np.testing.assert_allclose(loaded.extrinsics, synthetic_scene.extrinsics)


def test_list_scenes(tmp_path, synthetic_scene):
    for name in ("b", "a"):
        write_scene(tmp_path / name, synthetic_scene)
    (tmp_path / "notes").mkdir()
    assert [p.name for p in list_scenes(tmp_path)] == ["a", "b"]
    with pytest.raises(ValueError, match="no scene folders"):
        list_scenes(tmp_path / "notes")


def _edit_cameras(folder: Path, edit) -> None:
    path = folder / "cameras.json"
    document = json.loads(path.read_text())
    edit(document["images"])
    path.write_text(json.dumps(document))


def _set(index, key, value):
    def edit(entries):
        entries[index][key] = value

    return edit


def _nan_depth(folder):
    depth = np.load(folder / "depth" / "frame_0001.npy")
    depth[3, 4] = np.nan
    np.save(folder / "depth" / "frame_0001.npy", depth)


def _scaled_rotation(folder):
    def edit(entries):
        extrinsic = np.array(entries[2]["extrinsic"])
        extrinsic[:, :3] *= 1.1
        entries[2]["extrinsic"] = extrinsic.tolist()

    _edit_cameras(folder, edit)


def _mirrored_rotation(folder):
    def edit(entries):
        extrinsic = np.array(entries[0]["extrinsic"])
        extrinsic[0] *= -1
        entries[0]["extrinsic"] = extrinsic.tolist()

    _edit_cameras(folder, edit)


def _zero_focal(folder):
    def edit(entries):
        entries[1]["intrinsic"][0][0] = 0.0

    _edit_cameras(folder, edit)


MALFORMED = {
    "missing cameras.json": (lambda f: (f / "cameras.json").unlink(), "cameras.json", "missing"),
    "missing image": (lambda f: (f / "images" / "frame_0002.png").unlink(), "frame_0002.png", "missing"),
    "extra image": (
        lambda f: shutil.copy(f / "images" / "frame_0000.png", f / "images" / "stray.png"),
        "stray.png",
        "not listed",
    ),
    "missing depth": (lambda f: (f / "depth" / "frame_0001.npy").unlink(), "frame_0001.png", "no .npy/.png"),
    "depth without image": (
        lambda f: np.save(f / "depth" / "other.npy", np.ones((HEIGHT, WIDTH), np.float32)),
        "other.npy",
        "without an image",
    ),
    "non-finite depth": (_nan_depth, "frame_0001.npy", "non-finite"),
    "depth of the wrong size": (
        lambda f: np.save(f / "depth" / "frame_0000.npy", np.ones((HEIGHT, WIDTH + 1), np.float32)),
        "frame_0000.npy",
        "depth is",
    ),
    "integer npy depth": (
        lambda f: np.save(f / "depth" / "frame_0000.npy", np.ones((HEIGHT, WIDTH), np.int32)),
        "frame_0000.npy",
        "floating point",
    ),
    "scaled rotation": (_scaled_rotation, "frame_0002.png", "not a rotation"),
    "mirrored rotation": (_mirrored_rotation, "frame_0000.png", "not a rotation"),
    "zero focal length": (_zero_focal, "frame_0001.png", "focal lengths must be positive"),
    "3x3 extrinsic": (
        lambda f: _edit_cameras(f, _set(0, "extrinsic", np.eye(3).tolist())),
        "frame_0000.png",
        "3x4",
    ),
    "image size mismatch": (lambda f: _edit_cameras(f, _set(1, "width", WIDTH + 2)), "frame_0001.png", "says"),
    "missing key": (lambda f: _edit_cameras(f, lambda e: e[0].pop("intrinsic")), "image #0", "missing keys"),
    "count mismatch": (lambda f: _edit_cameras(f, lambda e: e.pop()), "frame_0002", "not listed"),
    "png depth without scale": (
        lambda f: (
            (f / "depth" / "frame_0000.npy").unlink(),
            Image.fromarray(np.ones((HEIGHT, WIDTH), np.uint16)).save(f / "depth" / "frame_0000.png"),
        ),
        "cameras.json",
        "depth_scale",
    ),
    "mask without image": (
        lambda f: Image.fromarray(np.ones((HEIGHT, WIDTH), np.uint8)).save(f / "masks" / "x.png"),
        "masks",
        "x.png",
    ),
    "invalid json": (lambda f: (f / "cameras.json").write_text("{"), "cameras.json", "not valid JSON"),
    "huge focal length": (
        lambda f: _edit_cameras(f, _set(1, "intrinsic", [[1e308, 0, 20], [0, 1e308, 14], [0, 0, 1]])),
        "frame_0001.png",
        "at most 1e+09 pixels",
    ),
    "file name climbing out": (
        lambda f: _edit_cameras(f, _set(0, "file_name", "../../victim.png")),
        "victim.png",
        "must be a path inside images/",
    ),
    "file name with a backslash": (
        lambda f: _edit_cameras(f, _set(0, "file_name", "..\\victim.png")),
        "victim.png",
        "must be a path inside images/",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_scene_is_rejected_naming_scene_and_file(case, scene_dir):
    corrupt, file_hint, problem = MALFORMED[case]
    corrupt(scene_dir)
    with pytest.raises(SceneFormatError) as error:
        load_scene(scene_dir)
    message = str(error.value)
    assert "scene 'room'" in message
    assert file_hint in message
    assert problem in message


def test_write_refuses_non_empty_folder(scene_dir, synthetic_scene):
    with pytest.raises(ValueError, match="not empty"):
        write_scene(scene_dir, synthetic_scene)
    write_scene(scene_dir, synthetic_scene, overwrite=True)
    assert load_scene(scene_dir).num_frames == NUM_FRAMES


# --------------------------------------------------------------------------------------------- COLMAP


def _write_colmap_model(scene, sparse_dir: Path, model: str) -> None:
    import pycolmap

    reconstruction = pycolmap.Reconstruction()
    for index, (intrinsic, extrinsic) in enumerate(zip(scene.intrinsics, scene.extrinsics), start=1):
        camera = pycolmap.Camera.create_from_model_name(index, model, 1.0, WIDTH, HEIGHT)
        fx, fy = intrinsic[0, 0], intrinsic[1, 1]
        cx, cy = intrinsic[0, 2] + COLMAP_PIXEL_CENTER, intrinsic[1, 2] + COLMAP_PIXEL_CENTER
        camera.params = {
            "PINHOLE": [fx, fy, cx, cy],
            "SIMPLE_RADIAL": [fx, cx, cy, 0.01],
            "OPENCV": [fx, fy, cx, cy, 0.01, 0.0, 0.0, 0.0],
        }[model]
        reconstruction.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=scene.image_names[index - 1], camera_id=index, image_id=index)
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(extrinsic))
    sparse_dir.mkdir(parents=True)
    reconstruction.write(str(sparse_dir))


@pytest.mark.parametrize("model", ["PINHOLE", "SIMPLE_RADIAL", "OPENCV"])
def test_colmap_import_matches_cameras(tmp_path, synthetic_scene, model):
    images_dir = tmp_path / "colmap_images"
    images_dir.mkdir()
    for name, image in zip(synthetic_scene.image_names, synthetic_scene.images):
        Image.fromarray(image).save(images_dir / name)
    depth_dir = tmp_path / "colmap_depth"
    depth_dir.mkdir()
    for name, depth in zip(synthetic_scene.image_names, synthetic_scene.depths):
        np.save(depth_dir / name.replace(".png", ".npy"), depth)
    _write_colmap_model(synthetic_scene, tmp_path / "sparse" / "0", model)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = import_colmap(tmp_path / "sparse" / "0", images_dir, tmp_path / "imported", depth_dir=depth_dir)
    distortion_warnings = [w for w in caught if "distortion" in str(w.message)]
    assert len(distortion_warnings) == (0 if model == "PINHOLE" else 1)

    imported = load_scene(out)
    assert imported.image_names == synthetic_scene.image_names
    np.testing.assert_allclose(imported.intrinsics, synthetic_scene.intrinsics, atol=1e-9)
    np.testing.assert_allclose(imported.extrinsics, synthetic_scene.extrinsics, atol=1e-9)
    np.testing.assert_array_equal(imported.images, synthetic_scene.images)
    np.testing.assert_array_equal(imported.depths, synthetic_scene.depths)


def test_colmap_import_reads_dense_bin_depth(tmp_path, synthetic_scene):
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    depth_dir = tmp_path / "depth_maps"
    depth_dir.mkdir()
    for name, image, depth in zip(synthetic_scene.image_names, synthetic_scene.images, synthetic_scene.depths):
        Image.fromarray(image).save(images_dir / name)
        header = f"{WIDTH}&{HEIGHT}&1&".encode()
        # COLMAP writes the (width, height, channels) array in Fortran order: one image row after another.
        (depth_dir / (name + ".geometric.bin")).write_bytes(header + depth.astype(np.float32).tobytes())
    _write_colmap_model(synthetic_scene, tmp_path / "sparse", "PINHOLE")
    out = import_colmap(tmp_path / "sparse", images_dir, tmp_path / "scene", depth_dir=depth_dir)
    np.testing.assert_array_equal(load_scene(out).depths, synthetic_scene.depths)


def test_colmap_import_errors(tmp_path, synthetic_scene):
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    _write_colmap_model(synthetic_scene, tmp_path / "sparse", "PINHOLE")
    with pytest.raises(ValueError, match="frame_0000.png"):
        import_colmap(tmp_path / "sparse", images_dir, tmp_path / "out")
    for name, image in zip(synthetic_scene.image_names, synthetic_scene.images):
        Image.fromarray(image).save(images_dir / name)
    with pytest.raises(ValueError, match="no depth map for 'frame_0000.png'"):
        import_colmap(tmp_path / "sparse", images_dir, tmp_path / "out", depth_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_colmap_import_command_line_reports_bad_input(tmp_path, capsys):
    from vggt.data.colmap_import import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
