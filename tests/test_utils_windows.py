"""Windowed reconstruction pieces (vggt.utils.windows): windows, links from shared frames, chains, loop closure."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.synthetic_windows import make_sequence, predict_window
from vggt.errors import InputError
from vggt.utils.pose_graph import SimilarityEdge, chain_similarities, optimize_pose_graph
from vggt.utils.similarity import Similarity, rotation_log
from vggt.utils.windows import (
    combined_confidence,
    link_from_shared_frames,
    loop_window,
    shared_frames,
    window_ranges,
)

NOISE, OUTLIERS = 0.02, 0.2


@pytest.mark.parametrize(("frames", "window", "overlap"), [(20, 6, 2), (21, 6, 2), (100, 32, 8), (7, 4, 3)])
def test_windows_cover_every_frame_with_full_windows_and_the_overlap(frames, window, overlap):
    ranges = window_ranges(frames, window, overlap)
    assert ranges[0].start == 0 and ranges[-1].stop == frames
    assert all(len(r) == window for r in ranges)
    shared = [len(set(a) & set(b)) for a, b in zip(ranges[:-1], ranges[1:])]
    assert all(count == overlap for count in shared[:-1]) and overlap <= shared[-1] < window
    assert window_ranges(5, 6, 2) == [range(5)]


def test_bad_window_options_raise_input_errors():
    for args, message in [((10, 6, 6), "overlap must be between 1 and window - 1"), ((10, 1, 0), "window must be")]:
        with pytest.raises(InputError, match=message):
            window_ranges(*args)
    with pytest.raises(InputError, match="share no frame"):
        shared_frames(range(0, 4), range(4, 8))


def predicted_windows(num_frames: int, window: int, overlap: int, seed: int):
    rng = np.random.default_rng(seed)
    sequence = make_sequence(num_frames, seed=seed)
    ranges = window_ranges(num_frames, window, overlap)
    return sequence, [predict_window(sequence, frames, NOISE, OUTLIERS, "depth", rng) for frames in ranges], rng


def link(previous, current):
    """Similarity taking `current`'s coordinates into `previous`'s, from the frames both hold."""
    common = [f for f in previous.frames if f in current.frames]
    in_previous = [list(previous.frames).index(f) for f in common]
    in_current = [list(current.frames).index(f) for f in common]
    fit = link_from_shared_frames(
        previous.points[in_previous],
        current.points[in_current],
        previous.confidence[in_previous],
        current.confidence[in_current],
    )
    return fit.similarity


def test_chained_windows_put_every_camera_in_the_first_cameras_frame():
    sequence, windows, _ = predicted_windows(20, 6, 2, seed=0)
    nodes = chain_similarities([link(a, b) for a, b in zip(windows[:-1], windows[1:])])
    world = [node.apply_to_extrinsics(w.extrinsics) for node, w in zip(nodes, windows)]
    to_first_camera = Similarity.from_camera(world[0][0])
    cameras = [to_first_camera.apply_to_extrinsics(e) for e in world]
    np.testing.assert_allclose(cameras[0][0], np.eye(3, 4), atol=1e-12)

    # The ground truth's world is camera 0's frame, at scale 1; the chain's is at the first window's scale.
    scale = windows[0].window_from_world.scale
    for window, extrinsics in zip(windows, cameras):
        truth = sequence.extrinsics[np.asarray(window.frames)]
        rotation = np.rad2deg(
            np.linalg.norm(rotation_log(extrinsics[:, :, :3] @ truth[:, :, :3].transpose(0, 2, 1)), axis=-1)
        )
        centres = -np.einsum("sji,sj->si", extrinsics[:, :, :3], extrinsics[:, :, 3]) / scale
        true_centres = -np.einsum("sji,sj->si", truth[:, :, :3], truth[:, :, 3])
        assert rotation.max() < 0.2, rotation
        # Centres within 2 % of the ring's radius (3) after 4 links with 20 % outlier points in every window (36 % of
        # the point pairs): 0.045 here, 0.02 without outliers.
        assert np.abs(centres - true_centres).max() < 0.06, np.abs(centres - true_centres).max()


def test_a_loop_window_closes_the_scale_drift():
    _, windows, rng = predicted_windows(40, 6, 2, seed=1)
    links = [link(a, b) for a, b in zip(windows[:-1], windows[1:])]
    nodes = chain_similarities(links)
    loop = predict_window(make_sequence(40, seed=1), loop_window(40, 6), NOISE, OUTLIERS, "depth", rng)
    assert list(loop.frames) == [37, 38, 39, 0, 1, 2]
    last = len(nodes) - 1
    edges = [SimilarityEdge(k, k + 1, z) for k, z in enumerate(links)]
    edges += [
        SimilarityEdge(last, last + 1, link(windows[-1], loop)),
        SimilarityEdge(0, last + 1, link(windows[0], loop)),
    ]
    result = optimize_pose_graph(nodes + [nodes[-1] @ link(windows[-1], loop)], edges)

    def worst_scale_error(estimate):
        truth = [windows[0].window_from_world @ w.window_from_world.inverse() for w in windows]
        return max(abs(np.log(node.scale / true.scale)) for node, true in zip(estimate, truth))

    open_chain, closed = worst_scale_error(nodes), worst_scale_error(result.nodes[:-1])
    assert closed < open_chain / 3, (open_chain, closed)


def test_a_named_loop_takes_the_frames_before_the_late_one_and_after_the_early_one():
    assert loop_window(40, 6, revisit=(3, 30)) == [28, 29, 30, 3, 4, 5]
    assert loop_window(40, 6) == loop_window(40, 6, revisit=(0, 39))
    for revisit in [(3, 8), (30, 3), (-1, 20), (3, 40)]:  # too close, reversed, outside the sequence
        with pytest.raises(InputError, match="loop_closure names frames"):
            loop_window(40, 6, revisit=revisit)


def test_confidences_combine_as_inverse_variances_and_zero_drops_a_pixel():
    np.testing.assert_allclose(
        combined_confidence(np.array([2.0, 1.0, 0.0]), np.array([2.0, 3.0, 5.0])), [1.0, 0.75, 0]
    )
    rng = np.random.default_rng(2)
    points = rng.normal(size=(2, 4, 5, 3))
    moved = 2.0 * points + 1.0
    moved[0, 0, 0] = 1e6  # a wild point with confidence 0 must not matter
    confidence = np.ones((2, 4, 5))
    confidence[0, 0, 0] = 0.0
    fit = link_from_shared_frames(moved, points, current_confidence=confidence)
    assert len(fit.weights) == 39
    expected = np.diag([2.0, 2.0, 2.0, 1.0])
    expected[:3, 3] = 1.0
    np.testing.assert_allclose(fit.similarity.matrix, expected, atol=1e-9)
