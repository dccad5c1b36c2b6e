"""The trainer-ready folder (vggt.export.trainer) read the way gsplat's and nerfstudio's readers read it.

Neither reader is installed here (nerfstudio pulls torchvision; gsplat's COLMAP parser lives in its examples), so
each test follows the reader's code step by step, as named in the test:
- gsplat `examples/datasets/colmap.py` `Parser` (gsplat 1.5, commit 0714fc6): `simple_trainer`'s default
  `data_factor=4` reads `images_4/`, pairs the sorted file lists of `images/` and `images_4/`, and sizes each
  camera `width // factor` (then scales K by the actual image size over that);
- nerfstudio 1.1 `ColmapDataParser._get_all_images_and_cameras` / `_setup_downscale_factor` (depth at
  `<depths_path>/<image name>.with_suffix(".png")`, `<depths_path>_<f>/` when downscaled) and
  `nerfstudio.model_components.utils`' `get_depth_image_from_path` (cv2.IMREAD_ANYDEPTH x depth_unit_scale_factor
  1e-3); `NerfstudioDataParser` for transforms.json (`transform_matrix` camera-to-world, `applied_transform`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_reconstruction
from PIL import Image

from vggt.export.trainer import downscaled_size, nerfstudio_camera_to_world

pycolmap = pytest.importorskip("pycolmap")
cv2 = pytest.importorskip("cv2")
NERFSTUDIO_DEPTH_UNIT_SCALE = 1e-3  # ColmapDataParserConfig.depth_unit_scale_factor's default


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trainer")
    reconstruction = synthetic_reconstruction(folder / "photos", num_frames=3, height=60, width=84, masks=True)
    return reconstruction, reconstruction.save(folder / "out")


def gsplat_rel_paths(folder: Path) -> list[str]:
    return [os.path.relpath(os.path.join(dp, f), folder) for dp, _, fn in os.walk(folder) for f in fn]


def test_gsplat_default_data_factor_reads_images_4(scene):
    _, out = scene
    factor = 4  # simple_trainer's default
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    image_names = sorted(image.name for image in model.images.values())
    colmap_files = sorted(gsplat_rel_paths(out / "images"))
    image_files = sorted(gsplat_rel_paths(out / f"images_{factor}"))
    assert os.path.splitext(image_files[0])[1].lower() != ".jpg"  # else gsplat re-resizes into images_4_png
    colmap_to_image = dict(zip(colmap_files, image_files))
    for name in image_names:
        path = out / f"images_{factor}" / colmap_to_image[name]
        assert colmap_to_image[name] == name  # the pairing of sorted lists pairs each photo with its own copy
        camera = model.cameras[model.find_image_with_name(name).camera_id]
        actual = Image.open(path)
        # gsplat's imsize is (width // factor, height // factor); the scale it applies to K must be exactly 1.
        assert actual.size == (camera.width // factor, camera.height // factor)
        original = Image.open(out / "images" / name).convert("RGB")
        expected = np.asarray(original.resize(actual.size, Image.Resampling.BOX), dtype=np.float64)
        assert np.abs(np.asarray(actual.convert("RGB"), dtype=np.float64) - expected).mean() < 12


def test_nerfstudio_colmap_dataparser_reads_depth_in_its_units(scene):
    reconstruction, out = scene
    for index, name in enumerate(reconstruction.image_names):
        depth_path = (out / "depth" / name).with_suffix(".png")  # depths_path=Path("depth")
        read = cv2.imread(str(depth_path), cv2.IMREAD_ANYDEPTH).astype(np.float64) * NERFSTUDIO_DEPTH_UNIT_SCALE
        truth = reconstruction.original_depth(index)
        assert read.shape == truth.shape
        np.testing.assert_allclose(read, truth, atol=5e-4 + 1e-6)
        assert np.corrcoef(read[truth > 0], truth[truth > 0])[0, 1] > 0.999
        for factor in (2, 4, 8):  # downscale_factor=f: the same names under depth_<f>/, at the camera's size
            small = cv2.imread(str((out / f"depth_{factor}" / name).with_suffix(".png")), cv2.IMREAD_ANYDEPTH)
            width, height = reconstruction.image_wh[index]
            assert small.shape[::-1] == downscaled_size(int(width), int(height), factor)
            assert set(np.unique(small)) <= set(np.unique(cv2.imread(str(depth_path), cv2.IMREAD_ANYDEPTH)))
    # The previews are elsewhere, under a name no depth reader opens.
    assert all(p.suffix == ".png" and p.stem in {Path(n).stem for n in reconstruction.image_names}
               for p in (out / "depth_preview").iterdir())  # fmt: skip


def nerfstudio_colmap_camera_to_world(image) -> np.ndarray:
    """ColmapDataParser._get_all_images_and_cameras: the `transform_matrix` it derives from an image of sparse/0."""
    w2c = np.vstack([image.cam_from_world().matrix(), [0.0, 0.0, 0.0, 1.0]])
    c2w = np.linalg.inv(w2c)
    c2w[0:3, 1:3] *= -1
    c2w = c2w[np.array([1, 0, 2, 3]), :]
    c2w[2, :] *= -1
    return c2w


def test_transforms_json_is_what_nerfstudio_derives_from_the_colmap_model(scene):
    reconstruction, out = scene
    transforms = json.loads((out / "transforms.json").read_text())
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert transforms["camera_model"] == "PINHOLE"
    applied = np.eye(4)[:3][np.array([1, 0, 2])]
    applied[2] *= -1
    np.testing.assert_array_equal(transforms["applied_transform"], applied)
    assert len(transforms["frames"]) == reconstruction.num_frames
    for frame in transforms["frames"]:
        name = Path(frame["file_path"]).relative_to("images").as_posix()
        image = model.find_image_with_name(name)
        assert (out / frame["file_path"]).is_file() and frame["colmap_im_id"] == image.image_id
        np.testing.assert_allclose(frame["transform_matrix"], nerfstudio_colmap_camera_to_world(image), atol=1e-6)
        fx, fy, cx, cy = model.cameras[image.camera_id].params
        assert (frame["fl_x"], frame["fl_y"], frame["cx"], frame["cy"]) == pytest.approx((fx, fy, cx, cy))
        camera = model.cameras[image.camera_id]
        assert (frame["w"], frame["h"]) == (camera.width, camera.height)
        assert (out / frame["depth_file_path"]).is_file() and (out / frame["mask_path"]).is_file()


def test_nerfstudio_camera_to_world_inverts_our_extrinsic():
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rotation *= np.sign(np.linalg.det(rotation))
    extrinsic = np.hstack([rotation, [[0.5], [-1.0], [2.0]]])
    c2w = nerfstudio_camera_to_world(extrinsic)
    centre = -rotation.T @ extrinsic[:, 3]
    np.testing.assert_allclose(c2w[:3, 3], [centre[1], centre[0], -centre[2]])  # x and y swapped, z negated
    np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])


def test_masks_drop_pixels_without_confident_depth(scene):
    reconstruction, out = scene
    for index, name in enumerate(reconstruction.image_names):
        mask = Image.open((out / "masks" / name).with_suffix(".png"))  # ColmapDataParser masks_path=Path("masks")
        assert mask.mode == "L"
        values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        depth = reconstruction.original_depth(index)
        assert (values[depth == 0] == 0).all()  # the sky of the synthetic scene has no depth
        assert (values == 255).mean() > 0.3
        assert (out / "masks_4" / Path(name).with_suffix(".png")).is_file()
