"""Co3Dv2 read in its published layout (vggt.data.co3d), from a fixture written in that layout."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG
from PIL import Image

from training.train import load_config
from training.trainer import Trainer
from vggt.data.co3d import list_sequences, opencv_camera
from vggt.data.synthetic import generate_scene

HEIGHT, WIDTH, FRAMES = 56, 84, 4
CATEGORY = "teddybear"
SEQUENCES = {"34_1479_4753": "ndc_norm_image_bounds", "101_11758_21048": "ndc_isotropic"}
SCALE_ADJUSTMENT = 2.0  # the depth PNGs hold depth / 2, as float16 bits
FLIP_XY = np.diag([-1.0, -1.0, 1.0])  # OpenCV camera axes <-> PyTorch3D's (+X left, +Y up)


def pytorch3d_viewpoint(intrinsic: np.ndarray, extrinsic: np.ndarray, fmt: str) -> dict:
    """An OpenCV camera as Co3D's viewpoint annotation: R, T (X_view = X_world @ R + T) and NDC intrinsics."""
    half_wh = np.array([WIDTH, HEIGHT]) / 2.0
    rescale = half_wh if fmt == "ndc_norm_image_bounds" else np.full(2, half_wh.min())
    focal = np.array([intrinsic[0, 0], intrinsic[1, 1]]) / rescale
    # OpenCV puts pixel centres at integers, PyTorch3D's screen (NDC +-1 = the image's edges) at half-integers
    principal = (half_wh - (intrinsic[:2, 2] + 0.5)) / rescale
    return {
        "R": (FLIP_XY @ extrinsic[:, :3]).T.tolist(),
        "T": (FLIP_XY @ extrinsic[:, 3]).tolist(),
        "focal_length": focal.tolist(),
        "principal_point": principal.tolist(),
        "intrinsics_format": fmt,
    }


def write_co3d(root: Path) -> dict[str, object]:
    """One category of two sequences, as the Co3Dv2 archives unpack; returns the source scenes by sequence."""
    scenes, annotations = {}, []
    for index, (sequence, fmt) in enumerate(SEQUENCES.items()):
        scene = generate_scene(FRAMES, HEIGHT, WIDTH, seed=20 + index)
        scenes[sequence] = scene
        for frame in reversed(range(FRAMES)):  # annotation order is not frame order
            stem = f"frame{frame + 1:06d}"
            image = f"{CATEGORY}/{sequence}/images/{stem}.jpg"
            depth = f"{CATEGORY}/{sequence}/depths/{stem}.jpg.geometric.png"
            mask = f"{CATEGORY}/{sequence}/depth_masks/{stem}.png"
            for path in (image, depth, mask):
                (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene.images[frame]).save(root / image, quality=95)
            bits = (scene.depths[frame] / SCALE_ADJUSTMENT).astype(np.float16).view(np.uint16)
            Image.fromarray(bits).save(root / depth)
            Image.fromarray((scene.depths[frame] > 0).astype(np.uint8) * 255).save(root / mask)
            annotations.append(
                {
                    "sequence_name": sequence,
                    "frame_number": frame + 1,
                    "frame_timestamp": frame / 30.0,
                    "image": {"path": image, "size": [HEIGHT, WIDTH]},
                    "depth": {"path": depth, "scale_adjustment": SCALE_ADJUSTMENT, "mask_path": mask},
                    "mask": {"path": f"{CATEGORY}/{sequence}/masks/{stem}.png", "mass": 100.0},
                    "viewpoint": pytorch3d_viewpoint(scene.intrinsics[frame], scene.extrinsics[frame], fmt),
                    "meta": {},
                }
            )
    with gzip.open(root / CATEGORY / "frame_annotations.jgz", "wt") as file:
        json.dump(annotations, file)
    with gzip.open(root / CATEGORY / "sequence_annotations.jgz", "wt") as file:
        json.dump([{"sequence_name": s, "category": CATEGORY, "viewpoint_quality_score": 1.0} for s in SEQUENCES], file)
    (root / CATEGORY / "set_lists").mkdir()
    train = [[s, f, f"{CATEGORY}/{s}/images/frame{f:06d}.jpg"] for s in SEQUENCES for f in (1, 2, 3)]
    test = [[s, 4, f"{CATEGORY}/{s}/images/frame000004.jpg"] for s in SEQUENCES]
    (root / CATEGORY / "set_lists" / "set_lists_fewview_dev.json").write_text(
        json.dumps({"train": train, "val": [], "test": test})
    )
    return scenes


def test_pytorch3d_camera_projects_a_known_point_to_its_pixel():
    # PyTorch3D view: identity rotation, 5 units in front; focal 2 in isotropic NDC on a 60 x 40 image
    viewpoint = {"R": np.eye(3).tolist(), "T": [0.0, 0.0, 5.0], "focal_length": [2.0, 2.0],
                 "principal_point": [0.0, 0.0], "intrinsics_format": "ndc_isotropic"}  # fmt: skip
    intrinsic, extrinsic = opencv_camera(viewpoint, (40, 60))
    point = np.array([1.0, 1.0, 0.0])  # 1 unit to the camera's left and 1 up: NDC (0.4, 0.4), 8 pixels per 0.4
    camera = extrinsic[:, :3] @ point + extrinsic[:, 3]
    pixel = (intrinsic @ camera)[:2] / camera[2]
    # the image's centre is (29.5, 19.5) with pixel centres at integers; left and up are -x and -y in OpenCV
    np.testing.assert_allclose(pixel, [29.5 - 8.0, 19.5 - 8.0], atol=1e-12)
    assert camera[2] == pytest.approx(5.0)


def test_sequences_read_back_cameras_depth_and_pixels(tmp_path):
    scenes = write_co3d(tmp_path)
    sequences = list_sequences(tmp_path)
    assert [s.name for s in sequences] == [f"{CATEGORY}_101_11758_21048", f"{CATEGORY}_34_1479_4753"]
    for sequence in sequences:
        source = scenes[sequence.name.removeprefix(f"{CATEGORY}_")]
        assert sequence.num_frames == FRAMES and sequence.image_names[0] == "frame000001.jpg"
        np.testing.assert_allclose(sequence.intrinsics, source.intrinsics, atol=1e-9)
        np.testing.assert_allclose(sequence.extrinsics, source.extrinsics, atol=1e-12)
        frame = sequence.read_frame(2)
        assert frame.image.shape == (HEIGHT, WIDTH, 3)
        assert np.abs(frame.image.astype(int) - source.images[2]).mean() < 10  # the same picture, through JPEG
        known = source.depths[2] > 0
        np.testing.assert_allclose(frame.depth[known], source.depths[2][known], rtol=1e-3)  # float16
        assert (frame.depth[~known] == 0).all() and np.array_equal(frame.mask, known)
        # a pixel's depth, lifted to the world by the source camera, projects back onto it through the read camera
        row, col = np.argwhere(known)[len(np.argwhere(known)) // 2]
        ray = np.linalg.solve(source.intrinsics[2], [col, row, 1.0]) * source.depths[2][row, col]
        world = source.extrinsics[2][:, :3].T @ (ray - source.extrinsics[2][:, 3])
        camera = frame.extrinsic[:, :3] @ world + frame.extrinsic[:, 3]
        np.testing.assert_allclose((frame.intrinsic @ camera)[:2] / camera[2], [col, row], atol=1e-6)
        assert camera[2] == pytest.approx(frame.depth[row, col], rel=1e-3)


def test_set_list_and_categories_select_frames(tmp_path):
    write_co3d(tmp_path)
    train = list_sequences(tmp_path, categories=[CATEGORY], subset="fewview_dev", split="train")
    assert [s.image_names for s in train] == [[f"frame{f:06d}.jpg" for f in (1, 2, 3)]] * 2
    test = list_sequences(tmp_path, subset="fewview_dev", split="test")
    assert [s.image_names for s in test] == [["frame000004.jpg"]] * 2
    with pytest.raises(ValueError, match="no Co3D category \\['apple'\\]"):
        list_sequences(tmp_path, categories=["apple"])


def test_malformed_input_is_one_clear_error(tmp_path):
    write_co3d(tmp_path)
    with pytest.raises(ValueError, match="set_lists_manyview_dev_0.json is missing"):
        list_sequences(tmp_path, subset="manyview_dev_0")
    sequence = list_sequences(tmp_path)[0]
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(sequence.depth_paths[1])
    with pytest.raises(ValueError, match="frame000002.jpg.geometric.png is not a 16-bit depth PNG"):
        sequence.read_frame(1)
    annotations_path = tmp_path / CATEGORY / "frame_annotations.jgz"
    with gzip.open(annotations_path, "rt") as file:
        annotations = json.load(file)
    annotations[0]["viewpoint"]["intrinsics_format"] = "screen"
    with gzip.open(annotations_path, "wt") as file:
        json.dump(annotations, file)
    with pytest.raises(ValueError, match="teddybear_34_1479_4753', frame 4: bad annotation.*intrinsics_format"):
        list_sequences(tmp_path)
    annotations_path.write_text("not gzip")
    with pytest.raises(ValueError, match="frame_annotations.jgz is not gzip JSON"):
        list_sequences(tmp_path)
    with pytest.raises(ValueError, match="holds no Co3D sequence"):
        list_sequences(tmp_path / CATEGORY)


def test_training_reads_co3d_directly(tmp_path):
    write_co3d(tmp_path / "co3d")
    roots = f"data.roots=[{{path: {tmp_path / 'co3d'}, format: co3d, categories: [{CATEGORY}], expand_ratio: 1.0}}]"
    overrides = [*SMALL_TRAINING_RUN, "data.source=folders", roots, "data.frames_per_gpu=2", "optim.max_steps=2"]
    Trainer(load_config(TINY_TRAINING_CONFIG, [*overrides, f"run_dir={tmp_path / 'run'}"])).train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(np.isfinite(r["loss"]) and r["depth"] > 0 for r in records)
