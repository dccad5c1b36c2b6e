"""Virtual KITTI 2 read in its published layout (vggt.data.vkitti2), from a fixture written in that layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG
from PIL import Image

from training.train import load_config
from training.trainer import Trainer
from vggt.data.synthetic import generate_scene
from vggt.data.vkitti2 import list_sequences

HEIGHT, WIDTH, FRAMES = 56, 84, 4
SKY_CM = 65535  # how Virtual KITTI 2 stores the sky (655.35 m)
INTRINSIC_HEADER = "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"
EXTRINSIC_HEADER = "frame cameraID " + " ".join(
    [f"r{r},{c}" for r in (1, 2, 3) for c in (1, 2, 3)][:3]
    + ["t1"]
    + [f"r2,{c}" for c in (1, 2, 3)]
    + ["t2"]
    + [f"r3,{c}" for c in (1, 2, 3)]
    + ["t3", "0", "0", "0", "1"]
)


def write_vkitti2(root: Path, scene_name: str = "Scene01", variation: str = "clone") -> dict[int, object]:
    """Two cameras of one variation, as the rgb, depth and textgt archives unpack; returns the source scenes."""
    variation_dir = root / scene_name / variation
    scenes = {camera: generate_scene(FRAMES, HEIGHT, WIDTH, seed=10 + camera) for camera in (0, 1)}
    intrinsic_lines, extrinsic_lines = [INTRINSIC_HEADER], [EXTRINSIC_HEADER]
    for frame in range(FRAMES):
        for camera, scene in scenes.items():  # the files interleave the cameras frame by frame
            k = scene.intrinsics[frame]
            intrinsic_lines.append(f"{frame} {camera} {k[0, 0]:.6f} {k[1, 1]:.6f} {k[0, 2]:.6f} {k[1, 2]:.6f}")
            matrix = np.vstack([scene.extrinsics[frame], [0, 0, 0, 1]])
            extrinsic_lines.append(f"{frame} {camera} " + " ".join(f"{v:.9f}" for v in matrix.reshape(-1)))
            rgb = variation_dir / "frames" / "rgb" / f"Camera_{camera}" / f"rgb_{frame:05d}.jpg"
            depth = variation_dir / "frames" / "depth" / f"Camera_{camera}" / f"depth_{frame:05d}.png"
            rgb.parent.mkdir(parents=True, exist_ok=True)
            depth.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene.images[frame]).save(rgb, quality=95)
            centimetres = np.round(scene.depths[frame] * 100).astype(np.uint16)
            centimetres[scene.depths[frame] <= 0] = SKY_CM
            Image.fromarray(centimetres).save(depth)
    (variation_dir / "intrinsic.txt").write_text("\n".join(intrinsic_lines) + "\n")
    (variation_dir / "extrinsic.txt").write_text("\n".join(extrinsic_lines) + "\n")
    return scenes


def test_sequences_read_back_cameras_depth_and_pixels(tmp_path):
    scenes = write_vkitti2(tmp_path)
    sequences = list_sequences(tmp_path)
    assert [s.name for s in sequences] == ["Scene01_clone_Camera_0", "Scene01_clone_Camera_1"]
    for camera, sequence in enumerate(sequences):
        source = scenes[camera]
        assert sequence.num_frames == FRAMES
        np.testing.assert_allclose(sequence.intrinsics, source.intrinsics, atol=1e-5)
        np.testing.assert_allclose(sequence.extrinsics, source.extrinsics, atol=1e-7)
        frame = sequence.read_frame(2)
        assert frame.image.shape == (HEIGHT, WIDTH, 3)
        with Image.open(sequence.image_paths[2]) as written:
            assert sequence.image_paths[2].name == "rgb_00002.jpg"
            assert np.array_equal(frame.image, np.asarray(written.convert("RGB")))
        assert np.abs(frame.image.astype(int) - source.images[2]).mean() < 10  # the same picture, through JPEG
        known = source.depths[2] > 0
        np.testing.assert_allclose(frame.depth[known], source.depths[2][known], atol=0.005)  # centimetres
        assert (frame.depth[~known] == 0).all()  # the sky is unknown depth, not 655 m


def test_training_reads_vkitti2_directly(tmp_path):
    write_vkitti2(tmp_path / "vkitti2")
    roots = f"data.roots=[{{path: {tmp_path / 'vkitti2'}, format: vkitti2, expand_ratio: 1.0}}]"
    overrides = [*SMALL_TRAINING_RUN, "data.source=folders", roots, "data.frames_per_gpu=2", "optim.max_steps=2"]
    Trainer(load_config(TINY_TRAINING_CONFIG, [*overrides, f"run_dir={tmp_path / 'run'}"])).train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(np.isfinite(r["loss"]) and r["depth"] > 0 for r in records)


def test_missing_camera_file_is_one_clear_error(tmp_path):
    write_vkitti2(tmp_path)
    (tmp_path / "Scene01" / "clone" / "extrinsic.txt").unlink()
    with pytest.raises(ValueError, match="Scene01_clone_Camera_0.*extrinsic.txt is missing"):
        list_sequences(tmp_path)
    with pytest.raises(ValueError, match="holds no Virtual KITTI 2 sequence"):
        list_sequences(tmp_path / "Scene01")
