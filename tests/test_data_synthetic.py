"""Synthetic scenes: exact depth on the analytic surfaces, consistent cameras, speed, determinism."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vggt.data.scene import load_scene
from vggt.data.synthetic import generate_scene, sample_layout, write_synthetic_dataset
from vggt.utils.geometry import project_points, unproject_depth_map_to_point_map

NUM_FRAMES, HEIGHT, WIDTH = 8, 56, 70
# Generous bound: the scene renders in about 0.2 s; this only catches a per-pixel Python loop.
MAX_SECONDS = 3.0


@pytest.fixture(scope="module")
def layout():
    return sample_layout(np.random.default_rng(5))


@pytest.fixture(scope="module")
def scene(layout):
    return generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=5, layout=layout)


def test_shapes_and_cameras(scene):
    assert scene.images.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and scene.images.dtype == np.uint8
    assert scene.depths.shape == (NUM_FRAMES, HEIGHT, WIDTH) and scene.depths.dtype == np.float32
    rotations = scene.extrinsics[:, :, :3]
    np.testing.assert_allclose(
        rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0)
    np.testing.assert_allclose(scene.intrinsics[:, :2, 2], np.broadcast_to([WIDTH / 2, HEIGHT / 2], (NUM_FRAMES, 2)))
    # Most pixels see a surface; every camera sees the scene centre in front of it.
    assert (scene.depths > 0).mean() > 0.7
    pixels, depth = project_points(np.array([[0.0, 0.0, 0.4]]), scene.extrinsics, scene.intrinsics)
    assert (depth > 0).all()
    assert (np.abs(pixels[:, 0, 0] - WIDTH / 2) < WIDTH / 3).all() and (
        np.abs(pixels[:, 0, 1] - HEIGHT / 2) < HEIGHT / 3
    ).all()
    # Cameras move along the arc: distinct centres.
    centres = -np.einsum("sji,sj->si", rotations, scene.extrinsics[:, :, 3])
    assert np.linalg.norm(centres[1:] - centres[:-1], axis=-1).min() > 0.01


def test_unprojected_depth_lies_on_the_analytic_surfaces(scene, layout):
    points = unproject_depth_map_to_point_map(scene.depths, scene.extrinsics, scene.intrinsics)
    valid = scene.depths > 0
    distance = layout.surface_distance(points[valid])
    # float32 depth of a few metres: relative precision ~1e-7.
    assert distance.max() < 1e-5
    # Perturbing the cameras moves the points off the surfaces: the check is not vacuous.
    moved = scene.extrinsics.copy()
    moved[:, :, 3] += 0.05
    off = unproject_depth_map_to_point_map(scene.depths, moved, scene.intrinsics)[valid]
    assert np.median(layout.surface_distance(off)) > 1e-3


def test_reprojection_between_frames_is_consistent(scene):
    """World points seen by frame 0 land in frame 1 where frame 1's depth (and colour) agree."""
    points = unproject_depth_map_to_point_map(scene.depths[:1], scene.extrinsics[:1], scene.intrinsics[:1])[0]
    valid = scene.depths[0] > 0
    world = points[valid]
    pixels, depth = project_points(world, scene.extrinsics[1], scene.intrinsics[1])
    cols, rows = np.round(pixels[:, 0]).astype(int), np.round(pixels[:, 1]).astype(int)
    inside = (depth > 0) & (cols >= 0) & (cols < WIDTH) & (rows >= 0) & (rows < HEIGHT)
    assert inside.mean() > 0.3
    seen_depth = scene.depths[1][rows[inside], cols[inside]]
    relative = np.abs(seen_depth - depth[inside]) / depth[inside]
    visible = relative < 0.02  # the rest is occluded in frame 1 or lies on a depth edge
    assert visible.mean() > 0.6
    assert np.median(relative) < 0.01
    # Solid textures: matching pixels have similar colours, far more than random pairs do.
    colour_0 = scene.images[0][valid][inside][visible].astype(float)
    colour_1 = scene.images[1][rows[inside], cols[inside]][visible].astype(float)
    matched = np.abs(colour_0 - colour_1).mean()
    shuffled = np.abs(colour_0 - np.random.default_rng(0).permutation(colour_1)).mean()
    assert matched < 0.5 * shuffled


def test_deterministic_and_fast():
    start = time.perf_counter()
    first = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=3)
    elapsed = time.perf_counter() - start
    assert elapsed < MAX_SECONDS
    second = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=3)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.depths, second.depths)
    other = generate_scene(NUM_FRAMES, HEIGHT, WIDTH, seed=4)
    assert not np.array_equal(first.extrinsics, other.extrinsics)


def test_write_synthetic_dataset(tmp_path):
    paths = write_synthetic_dataset(tmp_path, num_scenes=2, num_frames=3, height=28, width=42, seed=7)
    assert [p.name for p in paths] == ["scene_0000", "scene_0001"]
    loaded = load_scene(paths[1])
    expected = generate_scene(3, 28, 42, seed=8)
    np.testing.assert_array_equal(loaded.images, expected.images)
    np.testing.assert_array_equal(loaded.depths, expected.depths)
    np.testing.assert_allclose(loaded.extrinsics, expected.extrinsics)


def test_rejects_empty_request():
    with pytest.raises(ValueError, match="at least one frame"):
        generate_scene(0, HEIGHT, WIDTH)


# ------------------------------------------------------------------------------------- held-out scenes


def _world_points(scene) -> np.ndarray:
    return unproject_depth_map_to_point_map(scene.depths, scene.extrinsics, scene.intrinsics)[scene.depths > 0]


def test_heldout_scenes_share_the_training_layouts_of_their_seed_only(tmp_path, capsys):
    """`vggt synthesize --like CONFIG --seed S` writes the layouts a training run seeded S would train on (scene i
    of both lies on the surfaces of `layout_rng(S, i)`'s layout), never those of CONFIG's own seed."""
    from training.data import SyntheticSceneDataset
    from vggt.cli.main import main
    from vggt.data.synthetic import layout_rng

    config = tmp_path / "synthetic.yaml"
    config.write_text("seed: 3\ndata:\n  num_frames: [2, 5]\n  image: {max_size: 84, aspect_range: [0.5, 0.5]}\n")
    out = tmp_path / "heldout"
    assert main(["synthesize", "--out", str(out), "--num-scenes", "2", "--seed", "5", "--like", str(config)]) == 0
    assert "wrote 2 scenes of 5 frames at 84x42" in capsys.readouterr().out
    heldout = [load_scene(out / f"scene_{i:04d}") for i in range(2)]
    assert heldout[0].images.shape == (5, 42, 84, 3) and heldout[0].tracks.num_points == 64

    training = SyntheticSceneDataset(num_scenes=2, augment=False, seed=5)  # a run seeded 5 trains on these layouts
    for index, scene in enumerate(heldout):
        layout = sample_layout(layout_rng(5, index))
        assert layout.surface_distance(_world_points(scene)).max() < 1e-4
        _, _, frames = training.load_frames(index, 2, (42, 84), np.random.default_rng(0))
        depths = np.stack([f.depth for f in frames])
        points = unproject_depth_map_to_point_map(depths, np.stack([f.extrinsic for f in frames]),
                                                  np.stack([f.intrinsic for f in frames]))[depths > 0]  # fmt: skip
        assert layout.surface_distance(points).max() < 1e-4
        # ... and not on the layouts of the config's own seed 3.
        assert np.median(sample_layout(layout_rng(3, index)).surface_distance(_world_points(scene))) > 1e-2

    code = main(["synthesize", "--out", str(tmp_path / "x"), "--seed", "3", "--like", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--seed 3 is the training seed" in err
    config.write_text("data:\n  source: folders\n  roots: [a]\n")
    assert main(["synthesize", "--out", str(tmp_path / "x"), "--like", str(config)]) == 2
    assert "not synthetic scenes" in capsys.readouterr().err
