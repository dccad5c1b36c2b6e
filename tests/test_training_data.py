"""Augmentation keeps geometry consistent; the dataset, frame-budget sampler and loader behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data import (
    DataConfig,
    FrameBudgetBatchSampler,
    SceneFolderDataset,
    SyntheticSceneDataset,
    build_train_loader,
    collate_samples,
    nearby_frame_ids,
)
from vggt.data.augment import (
    AugmentConfig,
    augment_colors,
    augment_frames,
    color_generators,
    crop_and_resize,
    target_shape,
    to_grayscale,
)
from vggt.data.scene import Frame, load_scene, write_scene
from vggt.data.synthetic import generate_scene, write_synthetic_dataset
from vggt.utils.geometry import project_points, unproject_depth_map_to_point_map

PATCH = 14
SMALL = AugmentConfig(max_size=70, patch_size=PATCH)
# Sub-pixel slack for float32 cameras when deciding which source pixel a projection falls in.
PIXEL_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def source_scene():
    return generate_scene(num_frames=3, height=84, width=112, seed=21)


def _check_depth_follows_cameras(original: Frame, augmented: Frame) -> None:
    """Points unprojected from the augmented frame land, in the original camera, on the source pixel whose
    depth they carry, at exactly that depth."""
    valid = augmented.depth > 0
    assert valid.mean() > 0.5
    points = unproject_depth_map_to_point_map(
        augmented.depth[None], augmented.extrinsic[None], augmented.intrinsic[None]
    )
    pixels, z = project_points(points[0][valid], original.extrinsic, original.intrinsic)
    np.testing.assert_allclose(z, augmented.depth[valid], rtol=1e-5)
    # The copied pixel is the one containing the projection (either one when it falls on a border).
    height, width = original.depth.shape
    matched = np.zeros(len(z), dtype=bool)
    for col_shift in (-PIXEL_TOLERANCE, PIXEL_TOLERANCE):
        for row_shift in (-PIXEL_TOLERANCE, PIXEL_TOLERANCE):
            cols = np.clip(np.floor(pixels[:, 0] + 0.5 + col_shift).astype(int), 0, width - 1)
            rows = np.clip(np.floor(pixels[:, 1] + 0.5 + row_shift).astype(int), 0, height - 1)
            matched |= original.depth[rows, cols] == augmented.depth[valid]
    assert matched.all()


@pytest.mark.parametrize(
    "box, out_hw",
    [
        ((0, 0, 112, 84), (42, 56)),
        ((13, 7, 60, 40), (28, 42)),
        ((30, 20, 50, 33), (42, 70)),
        ((5, 9, 98, 28), (14, 56)),
    ],
)
def test_crop_and_resize_keeps_depth_and_intrinsics_consistent(source_scene, box, out_hw):
    original = source_scene.read_frame(0)
    augmented = crop_and_resize(original, box, out_hw)
    assert augmented.image.shape == (*out_hw, 3) and augmented.depth.shape == out_hw
    np.testing.assert_array_equal(augmented.extrinsic, original.extrinsic)
    _check_depth_follows_cameras(original, augmented)


def test_random_augmentation_keeps_geometry_across_frames(source_scene):
    """After augmenting every frame differently, a point seen in frame 0 reprojects into frame 1 where the depth
    of frame 1 agrees (as it does before augmentation)."""
    config = AugmentConfig(max_size=70, patch_size=PATCH, color_jitter_prob=1.0, grayscale_prob=0.5, blur_prob=0.5)
    out_hw = target_shape(0.6, config.max_size, config.patch_size)
    frames = [source_scene.read_frame(i) for i in range(3)]
    augmented = augment_frames(frames, out_hw, np.random.default_rng(0), config)
    for original, frame in zip(frames, augmented):
        _check_depth_follows_cameras(original, frame)
    points = unproject_depth_map_to_point_map(
        augmented[0].depth[None], augmented[0].extrinsic[None], augmented[0].intrinsic[None]
    )[0][augmented[0].depth > 0]
    pixels, z = project_points(points, augmented[1].extrinsic, augmented[1].intrinsic)
    cols, rows = np.round(pixels[:, 0]).astype(int), np.round(pixels[:, 1]).astype(int)
    inside = (z > 0) & (cols >= 0) & (cols < out_hw[1]) & (rows >= 0) & (rows < out_hw[0])
    assert inside.sum() > 50
    relative = np.abs(augmented[1].depth[rows[inside], cols[inside]] - z[inside]) / z[inside]
    assert np.median(relative) < 0.02
    # Colours changed, per frame.
    assert not np.array_equal(augmented[0].image, crop_and_resize(frames[0], (0, 0, 112, 84), out_hw).image)


def test_target_shape_and_grayscale():
    assert target_shape(1.0, 518, 14) == (518, 518)
    assert target_shape(0.33, 518, 14) == (168, 518)
    for aspect in np.linspace(0.33, 1.0, 9):
        height, width = target_shape(float(aspect), 518, 14)
        assert width == 518 and height % 14 == 0 and 14 <= height <= 518
    gray = to_grayscale(np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


# ------------------------------------------------------------------------------------------- sampler


def test_sampler_keeps_frame_budget_and_is_deterministic():
    sampler = FrameBudgetBatchSampler(10, frames_per_gpu=12, num_frames_range=(2, 5), batches_per_epoch=20, seed=3)
    batches = sampler.batch_keys(0)
    assert len(batches) == len(sampler) == 20
    counts = set()
    for batch in batches:
        num_frames = batch[0].num_frames
        counts.add(num_frames)
        assert 2 <= num_frames <= 5
        assert len(batch) == 12 // num_frames
        assert {key.num_frames for key in batch} == {num_frames}
        assert len({key.aspect_ratio for key in batch}) == 1 and 0.33 <= batch[0].aspect_ratio <= 1.0
        assert len({key.seed for key in batch}) == len(batch)
    assert len(counts) > 1
    assert batches == sampler.batch_keys(0)
    assert batches != sampler.batch_keys(1)
    sampler.set_epoch(1)
    assert list(sampler) == sampler.batch_keys(1)


def test_sampler_shards_one_global_batch_over_ranks():
    """Two ranks with 8 frames each see exactly the batches one rank with 16 frames sees (fixed frame count)."""
    common = dict(num_frames_range=(4, 4), batches_per_epoch=6, seed=9)
    single = FrameBudgetBatchSampler(7, frames_per_gpu=16, **common).batch_keys(2)
    ranks = [FrameBudgetBatchSampler(7, frames_per_gpu=8, rank=r, world_size=2, **common).batch_keys(2) for r in (0, 1)]
    for step, global_batch in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == global_batch
    # Scenes are visited in shuffled passes: every scene within the first two passes.
    visited = [key.scene_index for batch in single for key in batch]
    assert sorted(visited[:7]) == list(range(7))


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="frames_per_gpu"):
        FrameBudgetBatchSampler(4, frames_per_gpu=8, num_frames_range=(2, 24))
    with pytest.raises(ValueError, match="rank"):
        FrameBudgetBatchSampler(4, frames_per_gpu=48, rank=2, world_size=2)


# ------------------------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    write_synthetic_dataset(root, num_scenes=3, num_frames=5, height=56, width=84, seed=1)
    return root


def _check_sample(sample, num_frames, out_hw, with_depth):
    assert sample["images"].shape == (num_frames, 3, *out_hw) and sample["images"].dtype == torch.float32
    assert 0.0 <= sample["images"].min() and sample["images"].max() <= 1.0
    assert sample["intrinsics"].shape == (num_frames, 3, 3)
    assert sample["extrinsics"].shape == (num_frames, 3, 4)
    assert sample["frame_ids"].shape == (num_frames,)
    assert ("depths" in sample) == with_depth and ("valid_masks" in sample) == with_depth
    if with_depth:
        assert sample["depths"].shape == (num_frames, *out_hw)
        assert sample["valid_masks"].dtype == torch.bool
        assert torch.equal(sample["valid_masks"], sample["depths"] > 0)


def test_folder_dataset_sample(dataset_root):
    dataset = SceneFolderDataset(dataset_root, SMALL)
    assert len(dataset) == 3
    out_hw = target_shape(0.5, SMALL.max_size, PATCH)
    sample = dataset[(1, 4, 0.5, 123)]
    _check_sample(sample, 4, out_hw, with_depth=True)
    assert sample["scene_name"] == "scene_0001"
    # Deterministic per key; cameras are those of the chosen frames, with intrinsics of the new size.
    again = dataset[(1, 4, 0.5, 123)]
    assert torch.equal(sample["images"], again["images"]) and torch.equal(sample["depths"], again["depths"])
    scene = load_scene(dataset_root / "scene_0001")
    ids = sample["frame_ids"].numpy()
    np.testing.assert_allclose(sample["extrinsics"].numpy(), scene.extrinsics[ids], atol=1e-6)
    for index, frame_id in enumerate(ids):
        augmented = Frame(
            sample["images"][index].permute(1, 2, 0).numpy(),
            sample["intrinsics"][index].double().numpy(),
            sample["extrinsics"][index].double().numpy(),
            sample["depths"][index].numpy(),
        )
        _check_depth_follows_cameras(scene.read_frame(int(frame_id)), augmented)


def test_camera_only_data(dataset_root, tmp_path):
    """Without depth (ignored, or absent on disk) samples carry no depth keys; mixed batches flag it."""
    camera_only = SceneFolderDataset(dataset_root, SMALL, use_depth=False)
    out_hw = target_shape(1.0, SMALL.max_size, PATCH)
    _check_sample(camera_only[(0, 3, 1.0, 5)], 3, out_hw, with_depth=False)
    scene = load_scene(dataset_root / "scene_0002", use_depth=False)
    write_scene(tmp_path / "no_depth", scene)
    on_disk = SceneFolderDataset([tmp_path / "no_depth"], SMALL)
    _check_sample(on_disk[(0, 2, 1.0, 5)], 2, out_hw, with_depth=False)

    with_depth = SceneFolderDataset(dataset_root, SMALL)
    batch = collate_samples([with_depth[(0, 2, 1.0, 1)], on_disk[(0, 2, 1.0, 2)]])
    assert batch["has_depth"].tolist() == [True, False]
    assert batch["valid_masks"][1].sum() == 0 and batch["valid_masks"][0].sum() > 0
    no_depth_batch = collate_samples([on_disk[(0, 2, 1.0, 1)], on_disk[(0, 2, 1.0, 2)]])
    assert "depths" not in no_depth_batch and "valid_masks" not in no_depth_batch
    assert no_depth_batch["images"].shape == (2, 2, 3, *out_hw)


def test_synthetic_dataset_sample():
    dataset = SyntheticSceneDataset(num_scenes=4, image_config=SMALL, seed=2)
    out_hw = target_shape(0.4, SMALL.max_size, PATCH)
    sample = dataset[(3, 3, 0.4, 77)]
    _check_sample(sample, 3, out_hw, with_depth=True)
    assert sample["valid_masks"].float().mean() > 0.5
    other = dataset[(3, 3, 0.4, 78)]
    assert not torch.equal(sample["extrinsics"], other["extrinsics"])


def test_loader_batches_resume_and_config(dataset_root):
    config = {
        "source": "folders",
        "roots": [str(dataset_root)],
        "frames_per_gpu": 6,
        "num_frames": [2, 3],
        "batches_per_epoch": 3,
        "image": {"max_size": 56},
    }
    loader = build_train_loader(config, rank=0, world_size=1, seed=4)
    batches = list(loader.iterate(epoch=0))
    assert len(batches) == len(loader) == 3
    for batch in batches:
        num_samples, num_frames, _, height, width = batch["images"].shape
        assert num_samples * num_frames <= 6 and num_samples == 6 // num_frames
        assert height % PATCH == 0 and width == 56
        assert batch["depths"].shape == (num_samples, num_frames, height, width)
        assert len(batch["scene_names"]) == num_samples
    resumed = list(loader.iterate(epoch=0, skip=1))
    assert len(resumed) == 2
    for expected, actual in zip(batches[1:], resumed):
        assert torch.equal(expected["images"], actual["images"])
        assert torch.equal(expected["depths"], actual["depths"])
    with pytest.raises(ValueError, match="unknown keys"):
        DataConfig.from_dict({"frames_per_batch": 4})
    with pytest.raises(ValueError, match="data.roots"):
        DataConfig.from_dict({"source": "folders"})


def test_dataset_weights_set_sampling_shares_whatever_the_sizes(dataset_root, tmp_path):
    write_synthetic_dataset(tmp_path / "small", num_scenes=1, num_frames=2, height=56, width=84, seed=3)
    roots = [{"path": str(dataset_root), "weight": 1.0}, {"path": str(tmp_path / "small"), "weight": 3.0}]
    config = {"source": "folders", "roots": roots, "frames_per_gpu": 2, "num_frames": [2, 2], "batches_per_epoch": 500}
    loader = build_train_loader({**config, "image": {"max_size": 42}}, seed=0)
    scenes = [key.scene_index for batch in loader.sampler.batch_keys(0) for key in batch]
    small_share = np.mean(np.array(scenes) == 3)  # the 3 scenes of dataset_root come first
    assert abs(small_share - 0.75) < 0.05, small_share
    unweighted = build_train_loader({**config, "roots": [str(dataset_root), str(tmp_path / "small")]}, seed=0)
    scenes = [key.scene_index for batch in unweighted.sampler.batch_keys(0) for key in batch]
    assert abs(np.mean(np.array(scenes) == 3) - 0.25) < 0.05  # by default every scene is equally likely
    with pytest.raises(ValueError, match="weight must be positive"):
        DataConfig.from_dict({**config, "roots": [{"path": str(dataset_root), "weight": 0}]})
    with pytest.raises(ValueError, match="must be a path or"):
        DataConfig.from_dict({**config, "roots": [{"root": str(dataset_root)}]})


def test_nearby_frames_stay_within_the_expand_ratio(dataset_root):
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = nearby_frame_ids(100, 4, 2.0, rng)
        assert len(set(ids.tolist())) == 4 and np.abs(ids - ids[0]).max() <= 8
    spread = [np.ptp(rng.choice(100, 4, replace=False)) for _ in range(200)]
    assert np.mean(spread) > 30  # uniform draws are far apart: the window is what keeps frames near
    dataset = SceneFolderDataset([{"path": str(dataset_root), "expand_ratio": 0.5}], SMALL)
    for seed in range(20):
        ids = dataset[(0, 3, 1.0, seed)]["frame_ids"].numpy()
        assert np.abs(ids - ids[0]).max() <= 1  # int(3 * 0.5) = 1 frame either side of the anchor


def test_shared_color_jitter_gives_every_frame_of_a_sample_the_same_change():
    image = np.random.default_rng(0).integers(0, 256, (28, 42, 3), dtype=np.uint8)
    shared = AugmentConfig(max_size=42, patch_size=PATCH, color_jitter_prob=1.0, shared_color_jitter_prob=1.0)
    outputs = [augment_colors(image, g, shared) for g in color_generators(np.random.default_rng(1), 3, shared)]
    assert all(np.array_equal(outputs[0], other) for other in outputs[1:])
    assert not np.array_equal(outputs[0], image)
    per_frame = AugmentConfig(max_size=42, patch_size=PATCH, color_jitter_prob=1.0)
    outputs = [augment_colors(image, g, per_frame) for g in color_generators(np.random.default_rng(1), 3, per_frame)]
    assert not np.array_equal(outputs[0], outputs[1])
