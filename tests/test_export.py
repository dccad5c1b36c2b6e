"""The writers of vggt.export on small synthetic scenes: PLY, COLMAP, GLB, depth maps, cameras.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vggt.data.layout import depth_file_stems, write_cameras_json
from vggt.export import (
    Observations,
    build_scene,
    colorize_depth,
    read_ply,
    write_colmap,
    write_depth_maps,
    write_glb,
    write_ply,
)
from vggt.export.glb import GLTF_FROM_OPENCV
from vggt.utils.cameras import Cameras

pycolmap = pytest.importorskip("pycolmap")
trimesh = pytest.importorskip("trimesh")


def rotation_about_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@pytest.fixture
def scene():
    """Three cameras looking at a cloud of points around (0, 0, 4), with different image sizes."""
    rng = np.random.default_rng(0)
    extrinsics = []
    for angle, shift in zip((0.0, 0.2, -0.3), (0.0, 0.5, -0.4)):
        rotation = rotation_about_y(angle)
        center = np.array([shift, 0.1 * shift, 0.0])
        extrinsics.append(np.concatenate([rotation, (-rotation @ center)[:, None]], axis=1))
    image_wh = np.array([[640, 480], [320, 240], [500, 500]])
    intrinsics = np.stack([np.array([[w * 0.9, 0, w / 2], [0, w * 0.9, h / 2], [0, 0, 1.0]]) for w, h in image_wh])
    points = rng.normal(size=(50, 3)) * 0.5 + np.array([0.0, 0.0, 4.0])
    colors = rng.integers(0, 256, size=(50, 3)).astype(np.uint8)
    return {
        "names": ["a.jpg", "b.png", "c.jpg"],
        "image_wh": image_wh,
        "extrinsics": np.stack(extrinsics),
        "intrinsics": intrinsics,
        "points": points,
        "colors": colors,
        "cameras": Cameras(["a.jpg", "b.png", "c.jpg"], np.stack(extrinsics), intrinsics, image_wh),
    }


def write_scene_colmap(directory, scene: dict, observations: Observations | None = None):
    """`write_colmap` of the `scene` fixture's cameras and points."""
    return write_colmap(directory, scene["cameras"], scene["points"], scene["colors"], observations)


def project(extrinsic: np.ndarray, intrinsic: np.ndarray, points: np.ndarray) -> np.ndarray:
    cam = points @ extrinsic[:, :3].T + extrinsic[:, 3]
    pix = cam @ intrinsic.T
    return pix[:, :2] / pix[:, 2:]


# --------------------------------------------------------------------------------------------------- PLY


def test_ply_round_trip_and_header(tmp_path, scene):
    path = write_ply(tmp_path / "p.ply", scene["points"], scene["colors"])
    data = path.read_bytes()
    header = data[: data.index(b"end_header\n")].decode("ascii")
    assert "format binary_little_endian 1.0" in header
    assert "element vertex 50" in header
    # 3 float32 + 3 uint8 per vertex after the header.
    assert len(data) - (data.index(b"end_header\n") + len(b"end_header\n")) == 50 * 15

    points, colors = read_ply(path)
    np.testing.assert_allclose(points, scene["points"].astype(np.float32))
    np.testing.assert_array_equal(colors, scene["colors"])

    cloud = trimesh.load(path)
    np.testing.assert_allclose(cloud.vertices, scene["points"], atol=1e-6)
    np.testing.assert_array_equal(cloud.colors[:, :3], scene["colors"])


def test_ply_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        write_ply(tmp_path / "p.ply", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "p.ply", np.zeros((4, 3)), np.zeros((4, 3), dtype=np.float32))


# --------------------------------------------------------------------------------------------------- COLMAP


def test_colmap_model_with_tracks_reads_back(tmp_path, scene):
    """Each point seen by every camera: tracks of length 3, points2D where the cameras project them."""
    num_points = len(scene["points"])
    rows = [(p, i) for i in range(3) for p in range(num_points)]
    point_index = np.array([p for p, _ in rows])
    image_index = np.array([i for _, i in rows])
    xy = np.stack(
        [project(scene["extrinsics"][i], scene["intrinsics"][i], scene["points"][p : p + 1])[0] for p, i in rows]
    )
    observations = Observations(point_index, image_index, xy)
    write_scene_colmap(tmp_path / "sparse", scene, observations)
    model = pycolmap.Reconstruction(str(tmp_path / "sparse"))
    assert model.num_reg_images() == 3
    assert model.num_points3D() == num_points
    for image_id, image in model.images.items():
        i = image_id - 1
        assert image.name == scene["names"][i]
        camera = model.cameras[image.camera_id]
        assert (camera.width, camera.height) == tuple(scene["image_wh"][i])
        K = scene["intrinsics"][i]
        # COLMAP puts pixel centres at +0.5, this package at integers.
        np.testing.assert_allclose(camera.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])
        np.testing.assert_allclose(image.cam_from_world().matrix(), scene["extrinsics"][i], atol=1e-9)
        assert image.num_points3D == num_points
    for point_id, point in model.points3D.items():
        assert point.track.length() == 3
        p = point_id - 1
        np.testing.assert_allclose(point.xyz, scene["points"][p])
        np.testing.assert_array_equal(point.color, scene["colors"][p])
        for element in point.track.elements:
            i = element.image_id - 1
            point2d = model.images[element.image_id].points2D[element.point2D_idx]
            assert point2d.point3D_id == point_id
            expected = project(scene["extrinsics"][i], scene["intrinsics"][i], scene["points"][p : p + 1])[0]
            np.testing.assert_allclose(point2d.xy, expected + 0.5, atol=1e-6)
            # COLMAP's own projection of the point lands on its recorded keypoint.
            image = model.images[element.image_id]
            cam_point = image.cam_from_world() * point.xyz
            colmap_xy = model.cameras[image.camera_id].img_from_cam(cam_point)
            np.testing.assert_allclose(colmap_xy, point2d.xy, atol=1e-6)


def test_colmap_rejects_observations_of_missing_points(tmp_path, scene):
    bad = Observations([len(scene["points"])], [0], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="do not exist"):
        write_scene_colmap(tmp_path, scene, bad)


# --------------------------------------------------------------------------------------------------- GLB


def test_glb_points_and_one_frustum_per_camera(tmp_path, scene):
    path = write_glb(tmp_path / "scene.glb", scene["points"], scene["colors"], scene["cameras"])
    loaded = trimesh.load(path)
    assert isinstance(loaded, trimesh.Scene)
    cloud = loaded.geometry["points"]
    np.testing.assert_allclose(cloud.vertices, scene["points"] @ GLTF_FROM_OPENCV.T, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(cloud.colors)[:, :3], scene["colors"])
    frustums = sorted(name for name in loaded.geometry if name.startswith("camera_"))
    assert len(frustums) == 3
    for i, name in enumerate(frustums):
        mesh = loaded.geometry[name]
        vertices = mesh.vertices @ GLTF_FROM_OPENCV.T  # back to OpenCV world coordinates
        rotation, translation = scene["extrinsics"][i][:, :3], scene["extrinsics"][i][:, 3]
        np.testing.assert_allclose(vertices[0], -rotation.T @ translation, atol=1e-5)  # apex = camera centre
        # The four other corners project onto the image corners.
        width, height = scene["image_wh"][i]
        corners = project(scene["extrinsics"][i], scene["intrinsics"][i], vertices[1:])
        np.testing.assert_allclose(corners, [[0, 0], [width, 0], [width, height], [0, height]], atol=1e-3)


def test_glb_scene_without_points_still_has_cameras(scene):
    built = build_scene(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), scene["cameras"])
    assert "points" not in built.geometry
    assert len(built.geometry) == 3


# --------------------------------------------------------------------------------------------------- depth


def test_depth_maps_and_previews(tmp_path):
    depth = np.stack([np.linspace(1.0, 5.0, 12, dtype=np.float32).reshape(3, 4)] * 2)
    depth[1, 0, 0] = np.nan
    write_depth_maps(tmp_path / "depth", ["x.jpg", "y.png"], depth[..., None], tmp_path / "preview", factors=(2,))
    loaded = np.load(tmp_path / "depth" / "x.npy")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, depth[0])

    from PIL import Image

    preview = np.asarray(Image.open(tmp_path / "preview" / "y.png"))
    assert preview.shape == (3, 4, 3)
    np.testing.assert_array_equal(preview[0, 0], [0, 0, 0])  # invalid depth is black
    # 16-bit PNG, value x 1e-3 = depth, 0 where there is none; nearest samples at half size (floored: 2 x 1).
    png = np.asarray(Image.open(tmp_path / "depth" / "y.png"))
    assert png.dtype == np.uint16 and png[0, 0] == 0
    np.testing.assert_allclose(png[0, 1:] * 1e-3, depth[1, 0, 1:], atol=5e-4 + 1e-7)
    half = np.asarray(Image.open(tmp_path / "depth_2" / "x.png"))
    assert half.shape == (1, 2)
    np.testing.assert_array_equal(half, png_of(depth[0])[[1]][:, [1, 3]])  # the pixels under the centres


def png_of(depth):
    return np.round(depth / 1e-3).astype(np.uint16)


def test_colorize_depth_near_is_warm_far_is_cool():
    depth = np.array([[1.0, 100.0]], dtype=np.float32)
    rgb = colorize_depth(depth)
    near, far = rgb[0, 0].astype(int), rgb[0, 1].astype(int)
    assert near[0] > near[2] and far[2] > far[0]


def test_unique_stems_keep_full_names_on_collision():
    assert depth_file_stems(["a.jpg", "b.png"]) == ["a", "b"]
    assert depth_file_stems(["a.jpg", "a.png", "c.png"]) == ["a.jpg", "a.png", "c"]


# --------------------------------------------------------------------------------------------------- cameras.json


def test_cameras_json(tmp_path, scene):
    path = write_cameras_json(
        tmp_path / "cameras.json", scene["cameras"], [{"depth_file": f"depth/{n}.npy"} for n in "abc"]
    )
    data = json.loads(path.read_text())
    assert "OpenCV" in data["convention"]
    assert [entry["file_name"] for entry in data["images"]] == scene["names"]
    for i, entry in enumerate(data["images"]):
        assert (entry["width"], entry["height"]) == tuple(scene["image_wh"][i])
        np.testing.assert_allclose(entry["extrinsic"], scene["extrinsics"][i])
        np.testing.assert_allclose(entry["intrinsic"], scene["intrinsics"][i])
        assert np.asarray(entry["extrinsic"]).shape == (3, 4)
        assert entry["depth_file"] == f"depth/{'abc'[i]}.npy"


def test_colmap_export_imports_back_as_the_same_cameras(tmp_path, scene):
    """write_colmap then vggt.data.colmap_import give back the cameras exactly (pixel conventions agree)."""
    from PIL import Image

    from vggt.data.colmap_import import import_colmap
    from vggt.data.scene import load_scene

    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for name, (w, h) in zip(scene["names"], scene["image_wh"]):
        Image.new("RGB", (int(w), int(h)), (90, 120, 150)).save(images_dir / name)
    write_scene_colmap(tmp_path / "sparse", scene)
    imported = load_scene(import_colmap(tmp_path / "sparse", images_dir, tmp_path / "scene"), load_data=False)
    order = [scene["names"].index(p.name) for p in imported.image_paths]
    np.testing.assert_allclose(imported.intrinsics, scene["intrinsics"][order], atol=1e-9)
    np.testing.assert_allclose(imported.extrinsics, scene["extrinsics"][order], atol=1e-9)
