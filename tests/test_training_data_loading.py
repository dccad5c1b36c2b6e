"""The threaded batch loader gives exactly the batches of the plain serial path, whatever the thread count.

The reference here is the loader as it was before frames were read and augmented on threads: frames read one by
one, each cropped and colour-jittered with the random draws interleaved with the work, samples converted to float
one by one and stacked. `load_batch` draws everything first (in that order) and writes each frame into the batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from training.data import (
    DataConfig,
    SampleKey,
    SceneFolderDataset,
    SyntheticSceneDataset,
    build_train_loader,
    collate_samples,
    default_loader_threads,
)
from vggt.data.augment import (
    AugmentConfig,
    color_generators,
    crop_and_resize,
    crop_box,
    jitter_colors,
    target_shape,
    to_grayscale,
)
from vggt.data.scene import Frame, load_scene, read_depth, write_scene
from vggt.data.synthetic import generate_scene
from vggt.errors import SceneFormatError

PATCH = 14
# Every colour step likely, frames sometimes sharing one change: all branches of the draws are exercised.
BUSY = AugmentConfig(max_size=70, patch_size=PATCH, grayscale_prob=0.4, blur_prob=0.4, shared_color_jitter_prob=0.3)


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory) -> Path:
    """Three scenes: PNG images with 16-bit PNG depth and masks, JPEG images with PNG depth, PNG with .npy depth."""
    root = tmp_path_factory.mktemp("mixed")
    for index in range(3):
        scene = generate_scene(6, 56, 84, seed=10 + index, name=f"scene_{index}")
        if index == 0:
            scene.masks = scene.depths > 0
            scene.masks[:, :9] = False
        if index == 1:
            scene.image_names = [name.replace(".png", ".jpg") for name in scene.image_names]
        write_scene(root / scene.name, scene, depth_format="png" if index < 2 else "npy", depth_scale=1e-3)
    return root


def previous_augment_frames(frames: list[Frame], out_hw, rng: np.random.Generator | None, config) -> list[Frame]:
    """Crops and colour changes as before plans: each frame's draws made while it is augmented."""
    color_rngs = [None] * len(frames) if rng is None else color_generators(rng, len(frames), config)
    augmented = []
    for frame, color_rng in zip(frames, color_rngs):
        box = crop_box(*frame.image.shape[:2], out_hw, rng, config.crop_scale_range)
        frame = crop_and_resize(frame, box, out_hw)
        if color_rng is not None:
            image = frame.image
            if color_rng.random() < config.color_jitter_prob:
                image = jitter_colors(image, color_rng, config)
            if color_rng.random() < config.grayscale_prob:
                image = to_grayscale(image)
            if color_rng.random() < config.blur_prob:
                sigma = color_rng.uniform(*config.blur_sigma_range) * max(image.shape[:2]) / config.max_size
                image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))
            frame.image = image
        augmented.append(frame)
    return augmented


def previous_sample(dataset: SceneFolderDataset, key: SampleKey) -> dict:
    """A sample as the serial loader made it: frames read in order, then augmented, converted and stacked."""
    out_hw = target_shape(key.aspect_ratio, dataset.image_config.max_size, dataset.image_config.patch_size)
    rng = np.random.default_rng(key.seed)
    scene = dataset.scenes[key.scene_index]
    frame_ids = rng.choice(scene.num_frames, size=key.num_frames, replace=scene.num_frames < key.num_frames)
    frames = [scene.read_frame(int(i), with_depth=dataset.use_depth) for i in frame_ids]
    frames = previous_augment_frames(frames, out_hw, rng if dataset.augment else None, dataset.image_config)
    sample = {
        "images": torch.from_numpy(np.stack([f.image for f in frames])).permute(0, 3, 1, 2).float().div_(255.0),
        "intrinsics": torch.from_numpy(np.stack([f.intrinsic for f in frames])).float(),
        "extrinsics": torch.from_numpy(np.stack([f.extrinsic for f in frames])).float(),
        "scene_name": scene.name,
        "frame_ids": torch.as_tensor(frame_ids, dtype=torch.int64),
    }
    if dataset.use_depth and all(f.depth is not None for f in frames):
        depths = torch.from_numpy(np.stack([f.depth for f in frames])).float()
        valid = depths > 0
        if all(f.mask is not None for f in frames):
            valid &= torch.from_numpy(np.stack([f.mask for f in frames]))
        sample["depths"] = depths.masked_fill_(~valid, 0.0)
        sample["valid_masks"] = valid
    return sample


def assert_same_batch(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        if torch.is_tensor(value):
            assert value.dtype == actual[name].dtype and value.shape == actual[name].shape, name
            assert torch.equal(value, actual[name]), name
        else:
            assert value == actual[name], name


BATCHES = [
    [SampleKey(0, 3, 0.5, 11), SampleKey(2, 3, 0.5, 12)],
    [SampleKey(1, 4, 0.8, 13), SampleKey(0, 4, 0.8, 14)],
    [SampleKey(2, 8, 1.0, 15)],  # more frames than the scene has: repeats
]


@pytest.mark.parametrize("augment, use_depth", [(True, True), (False, True), (True, False)])
def test_batches_are_those_of_the_serial_loader(mixed_root, augment, use_depth):
    for threads in (1, 3):
        dataset = SceneFolderDataset(mixed_root, BUSY, augment=augment, use_depth=use_depth, num_threads=threads)
        for keys in BATCHES:
            expected = collate_samples([previous_sample(dataset, key) for key in keys])
            assert_same_batch(expected, dataset.load_batch(keys))
            assert_same_batch(expected, collate_samples([dataset[key] for key in keys]))


def test_mixed_depth_batch_and_camera_only_samples(mixed_root, tmp_path):
    """A sample without depth in a batch with depth has zero depth and no valid pixel, as collate_samples gives."""
    write_scene(tmp_path / "no_depth" / "scene", load_scene(mixed_root / "scene_1", use_depth=False))
    roots = [str(mixed_root), str(tmp_path / "no_depth")]
    keys = [SampleKey(0, 2, 1.0, 5), SampleKey(3, 2, 1.0, 6)]
    serial = SceneFolderDataset(roots, BUSY, num_threads=1)
    threaded = SceneFolderDataset(roots, BUSY, num_threads=2)
    batch = threaded.load_batch(keys)
    assert batch["has_depth"].tolist() == [True, False] and not batch["valid_masks"][1].any()
    assert_same_batch(collate_samples([serial[key] for key in keys]), batch)
    assert_same_batch(collate_samples([previous_sample(serial, key) for key in keys]), batch)


def test_synthetic_and_loader_batches_do_not_depend_on_threads_or_workers(mixed_root):
    synthetic = [SyntheticSceneDataset(3, BUSY, seed=4, num_threads=threads) for threads in (1, 3)]
    for keys in BATCHES:
        assert_same_batch(synthetic[0].load_batch(keys), synthetic[1].load_batch(keys))
    config = dict(source="folders", roots=[str(mixed_root)], frames_per_gpu=6, num_frames=[2, 3], batches_per_epoch=4)
    config["image"] = {"max_size": 56, "blur_prob": 0.5}
    reference = list(build_train_loader({**config, "num_threads": 1}, seed=2).iterate(epoch=0))
    for threads, workers in ((3, 0), (2, 2)):
        loader = build_train_loader({**config, "num_threads": threads, "num_workers": workers}, seed=2)
        for expected, actual in zip(reference, loader.iterate(epoch=0), strict=True):
            assert_same_batch(expected, actual)


def test_errors_reach_the_caller_and_thread_settings_are_checked(mixed_root, tmp_path):
    broken = tmp_path / "broken"
    write_scene(broken / "scene", load_scene(mixed_root / "scene_2"))
    dataset = SceneFolderDataset(broken, BUSY, num_threads=2)
    depth_file = next((broken / "scene" / "depth").glob("*.npy"))
    depth = np.load(depth_file)
    depth[1, 2] = np.inf
    np.save(depth_file, depth)
    with pytest.raises(SceneFormatError, match="non-finite"):
        for seed in range(20):  # some sample reads the broken frame
            dataset.load_batch([SampleKey(0, 6, 1.0, seed)])
    with pytest.raises(ValueError, match="num_threads"):
        SceneFolderDataset(mixed_root, BUSY, num_threads=0)
    with pytest.raises(ValueError, match="share frames and size"):
        dataset.load_batch([SampleKey(0, 2, 1.0, 1), SampleKey(0, 3, 1.0, 2)])
    assert 1 <= default_loader_threads() <= 4 and default_loader_threads(num_workers=1000) == 1
    assert DataConfig.from_dict({"num_threads": 2}).num_threads == 2


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -0.5])
def test_depth_checks_and_png_depth_values(tmp_path, value):
    """16-bit PNG depth is value x scale in float32, as before; any bad value is still rejected."""
    units = np.random.default_rng(0).integers(0, 65536, (9, 7), dtype=np.uint16)
    Image.fromarray(units).save(tmp_path / "depth.png")
    np.testing.assert_array_equal(
        read_depth(tmp_path / "depth.png", 1e-3), units.astype(np.float32) * np.float32(1e-3), strict=True
    )
    depth = units.astype(np.float32)
    depth[4, 5] = value
    np.save(tmp_path / "depth.npy", depth)
    with pytest.raises(SceneFormatError, match="negative" if np.isfinite(value) else "non-finite"):
        read_depth(tmp_path / "depth.npy")
