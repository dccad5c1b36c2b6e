"""Bundle adjustment (vggt.ba) on synthetic scenes with known answers, against pycolmap's Ceres BA."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from vggt.ba import INSTALL_HINT, bundle_adjust, refine_with_ba, triangulate_tracks
from vggt.ba.ceres import pycolmap_bundle_adjust
from vggt.ba.solver import build_objective
from vggt.ba.testing import make_scene, mean_reprojection_error, perturb, relative_rotation_errors
from vggt.utils.geometry import project_points
from vggt.utils.pose_enc import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri

try:  # vggt.ba.linear subclasses Theseus' types; without Theseus the tests that use it are skipped
    from vggt.ba import linear
except ImportError:
    linear = None


def _has_theseus() -> bool:
    try:
        import theseus  # noqa: F401
    except ImportError:
        return False
    return True


needs_theseus = pytest.mark.skipif(not _has_theseus(), reason="theseus not installed (scripts/install_theseus.sh)")


def _noise_floor(scene, inliers) -> float:
    """Mean error the noise alone leaves at the optimum: the ground truth's error on the noisy tracks, times
    sqrt(1 - p / m), since a least-squares fit of p parameters absorbs p of the m residuals' noise
    (E[RSS] = sigma^2 (m - p))."""
    frames, points = scene.mask.shape
    parameters = 3 * points + 6 * (frames - 1) - 1 + 1  # points, poses less camera 0 and the scale, one focal
    residuals = 2 * inliers.sum()
    truth = mean_reprojection_error(scene.extrinsics, scene.intrinsics, scene.points3d, scene.tracks, inliers)
    return truth * np.sqrt(1 - parameters / residuals)


def _solve_and_compare(scene, loss):
    init = perturb(scene)
    inliers = scene.mask & ~scene.outlier_mask
    ours = bundle_adjust(*init, scene.tracks, scene.mask, scene.image_size, loss=loss)
    colmap = pycolmap_bundle_adjust(*init, scene.tracks, scene.mask, scene.image_size, loss=loss)
    floor = _noise_floor(scene, inliers)
    error_ours = mean_reprojection_error(ours.extrinsics, ours.intrinsics, ours.points3d, scene.tracks, inliers)
    error_colmap = mean_reprojection_error(*colmap, scene.tracks, inliers)
    rotation_before = relative_rotation_errors(init[0], scene.extrinsics).mean()
    rotation_after = relative_rotation_errors(ours.extrinsics, scene.extrinsics).mean()
    return ours, floor, error_ours, error_colmap, rotation_before, rotation_after


@needs_theseus
def test_converges_to_noise_floor_and_matches_colmap():
    scene = make_scene(num_frames=10, num_points=200, noise_px=1.0, seed=0)
    ours, floor, error, error_colmap, rot_before, rot_after = _solve_and_compare(scene, loss=None)
    assert abs(error / floor - 1) < 0.10, (error, floor)
    assert rot_after < rot_before / 5, (rot_before, rot_after)
    assert abs(error / error_colmap - 1) < 0.05, (error, error_colmap)
    assert ours.cost_history[-1] < ours.cost_history[0] / 100
    assert ours.inlier_mask[scene.mask].mean() > 0.95
    assert isinstance(ours.extrinsics, np.ndarray) and ours.extrinsics.shape == (10, 3, 4)


@needs_theseus
def test_robust_loss_converges_on_inliers_with_outliers():
    scene = make_scene(num_frames=10, num_points=100, noise_px=1.0, outlier_ratio=0.2, seed=3)
    ours, floor, error, error_colmap, rot_before, rot_after = _solve_and_compare(scene, loss="cauchy")
    inliers = scene.mask & ~scene.outlier_mask
    assert abs(error / floor - 1) < 0.10, (error, floor)
    assert rot_after < rot_before / 5, (rot_before, rot_after)
    assert abs(error / error_colmap - 1) < 0.05, (error, error_colmap)
    # The final inlier mask separates the planted outliers from the good observations.
    assert ours.inlier_mask[inliers].mean() > 0.95
    assert ours.inlier_mask[scene.outlier_mask].mean() < 0.05


def _solve_differentiable(backward_mode: str, **options):
    """A small perturbed problem with tracks and initial points requiring grad, solved and backpropagated.

    Returns (result, tracks, points): the gradients are in tracks.grad and points.grad.
    """
    scene = make_scene(num_frames=3, num_points=20, noise_px=0.5, seed=5)
    extrinsics, intrinsics, points = (torch.from_numpy(a) for a in perturb(scene, seed=6))
    tracks = torch.from_numpy(scene.tracks).requires_grad_(True)
    points = points.clone().requires_grad_(True)
    result = bundle_adjust(
        extrinsics,
        intrinsics,
        points,
        tracks,
        torch.from_numpy(scene.mask),
        loss="huber",
        max_iterations=10,
        backward_mode=backward_mode,
        **options,
    )
    (result.points3d.square().sum() + result.extrinsics[1:, :, 3].sum()).backward()
    return result, tracks, points


@needs_theseus
@pytest.mark.parametrize("backward_mode", ["implicit", "unroll"])
def test_gradients_flow_through_bundle_adjustment(backward_mode):
    result, tracks, points = _solve_differentiable(backward_mode)
    assert isinstance(result.points3d, torch.Tensor)
    assert torch.isfinite(tracks.grad).all() and tracks.grad.abs().sum() > 0
    if backward_mode == "unroll":
        assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0


@needs_theseus
def test_batched_problems_and_per_frame_focal():
    scenes = [make_scene(num_frames=4, num_points=40, noise_px=0.5, seed=s) for s in (7, 8)]
    inits = [perturb(s, seed=9) for s in scenes]
    stack = [torch.from_numpy(np.stack(parts)) for parts in zip(*inits)]
    tracks = torch.from_numpy(np.stack([s.tracks for s in scenes]))
    mask = torch.from_numpy(np.stack([s.mask for s in scenes]))
    mask[1, :, :5] = False  # the problems need not share their observations
    result = bundle_adjust(*stack, tracks, mask, loss=None, shared_focal=False, max_iterations=30)
    assert result.extrinsics.shape == (2, 4, 3, 4) and result.points3d.shape == (2, 40, 3)
    for b, scene in enumerate(scenes):
        observed = mask[b].numpy()
        error = mean_reprojection_error(
            result.extrinsics[b].numpy(),
            result.intrinsics[b].numpy(),
            result.points3d[b].numpy(),
            scene.tracks,
            observed,
        )
        assert error < 1.0, error  # noise 0.5 px: the mean error is near 0.6 px at the optimum
        assert np.allclose(result.extrinsics[b, 0].numpy(), stack[0][b, 0].numpy())  # camera 0 is the gauge


@needs_theseus
def test_jacobian_matches_finite_differences_and_theseus_layout():
    th = pytest.importorskip("theseus")
    scene = make_scene(num_frames=3, num_points=6, noise_px=0.5, seed=11)
    init = [torch.from_numpy(a)[None] for a in perturb(scene, seed=12)]
    mask = torch.from_numpy(scene.mask)[None].clone()
    mask[0, 1, 0] = False  # a hole in the observation pattern
    problem = build_objective(*init, torch.from_numpy(scene.tracks)[None], mask, loss=None, shared_focal=False)
    objective = problem.objective
    objective.update()  # resolves the batch size, as an optimizer does first
    block = linear.BlockSparseLinearization(objective)
    block.linearize()
    jacobian = block.dense_A()[0]  # [R, C]
    # Theseus' own dense linearization (per-variable Jacobians of the same cost functions) agrees.
    reference = th.DenseLinearization(objective)
    reference.linearize()
    assert torch.allclose(reference.A[0], jacobian, rtol=1e-12, atol=1e-9)
    assert torch.allclose(reference.b, block.b)
    assert torch.allclose(reference.Atb, block.Atb)
    # Central differences of the residuals along each tangent direction of the optimisation variables.
    start = {var.name: var.tensor.clone() for var in block.ordering}
    step = 1e-6
    for column in range(block.num_cols):
        residuals = []
        for sign in (1.0, -1.0):
            delta = torch.zeros(1, block.num_cols, dtype=torch.float64)
            delta[0, column] = sign * step
            objective.retract_vars_sequence(delta, block.ordering)
            residuals.append(objective.error()[0])
            objective.update(start)
        numeric = (residuals[0] - residuals[1]) / (2 * step)
        assert torch.allclose(numeric, jacobian[:, column], rtol=1e-4, atol=1e-4), column


@needs_theseus
@pytest.mark.parametrize("backward_mode", ["implicit", "unroll"])
def test_sparse_and_dense_solvers_agree_on_solution_and_gradients(backward_mode):
    outputs = {}
    for linear_solver in ("sparse", "dense"):  # CHOLMOD with its hand-written backward vs torch autograd
        result, tracks, points = _solve_differentiable(backward_mode, linear_solver=linear_solver)
        outputs[linear_solver] = (result.points3d.detach(), tracks.grad, points.grad)
    sparse, dense = outputs["sparse"], outputs["dense"]
    assert torch.allclose(sparse[0], dense[0], atol=1e-9)
    assert sparse[1].abs().max() > 0 and torch.allclose(sparse[1], dense[1], rtol=1e-6, atol=1e-9)
    if backward_mode == "unroll":
        assert sparse[2].abs().max() > 0 and torch.allclose(sparse[2], dense[2], rtol=1e-6, atol=1e-12)


@needs_theseus
def test_hundred_frames_with_short_tracks_matches_colmap():
    # 100 frames, 200 points each seen by 10 consecutive frames: the end frames see two or three points, so
    # their poses are under-determined (this crashed CHOLMOD before the damping floor).
    scene = make_scene(num_frames=100, num_points=200, noise_px=1.0, track_length=10, seed=0)
    assert scene.mask.sum(axis=1).min() <= 3
    init = perturb(scene)
    ours = bundle_adjust(*init, scene.tracks, scene.mask, scene.image_size, loss="cauchy")
    colmap = pycolmap_bundle_adjust(*init, scene.tracks, scene.mask, scene.image_size, loss="cauchy")
    assert np.isfinite(ours.extrinsics).all() and np.isfinite(ours.points3d).all()
    error = mean_reprojection_error(ours.extrinsics, ours.intrinsics, ours.points3d, scene.tracks, scene.mask)
    error_colmap = mean_reprojection_error(*colmap, scene.tracks, scene.mask)
    assert abs(error / error_colmap - 1) < 0.05, (error, error_colmap)


@needs_theseus
@pytest.mark.parametrize("linear_solver", ["sparse", "dense"])
def test_failed_factorisations_retry_with_more_damping(monkeypatch, linear_solver):
    scene = make_scene(num_frames=4, num_points=30, noise_px=0.5, seed=0)
    init = perturb(scene)
    mask = scene.mask.copy()
    mask[2] = False  # frame 2 observes nothing: its columns of the Jacobian are empty
    expected = bundle_adjust(*init, scene.tracks, mask, loss=None, linear_solver=linear_solver)
    # Without the damping floor the first factorisation of every solve fails; the retries must recover.
    solver_cls = linear.DampedSolver
    solve_damped, failures = solver_cls._solve_damped, []

    def counting_solve(self, *args):
        try:
            return solve_damped(self, *args)
        except linear.NotPositiveDefiniteError:
            failures.append(args)
            raise

    monkeypatch.setattr(linear, "DAMPING_FLOOR", 0.0)
    monkeypatch.setattr(solver_cls, "_solve_damped", counting_solve)
    result = bundle_adjust(*init, scene.tracks, mask, loss=None, linear_solver=linear_solver)
    assert len(failures) > 0
    assert np.allclose(result.extrinsics[2], init[0][2])  # the unobserved frame is left alone
    assert np.abs(result.points3d - expected.points3d).max() < 1e-3
    assert result.cost_history[-1] < 1.001 * expected.cost_history[-1]


@needs_theseus
def test_bad_inputs_raise_clear_errors():
    scene = make_scene(num_frames=3, num_points=10, seed=0)
    args = [scene.extrinsics, scene.intrinsics, scene.points3d, scene.tracks, scene.mask]
    with pytest.raises(ValueError, match="at least two frames"):
        bundle_adjust(*[a[:1] if i != 2 else a for i, a in enumerate(args)])
    with pytest.raises(ValueError, match="tracks has shape"):
        bundle_adjust(*args[:3], scene.tracks[:, :5], scene.mask)
    bad_points = scene.points3d.copy()
    bad_points[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        bundle_adjust(args[0], args[1], bad_points, *args[3:])
    with pytest.raises(ValueError, match="loss must be one of"):
        bundle_adjust(*args, loss="tukey")


def test_missing_theseus_gives_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "theseus", None)  # makes `import theseus` fail
    scene = make_scene(num_frames=2, num_points=5, seed=0)
    with pytest.raises(ImportError) as error:
        bundle_adjust(scene.extrinsics, scene.intrinsics, scene.points3d, scene.tracks, scene.mask)
    message = str(error.value)
    assert "\n" not in message and "install_theseus.sh" in message and "vggt[ba]" in message
    assert message.startswith(INSTALL_HINT)


def test_triangulation_recovers_noise_free_points():
    scene = make_scene(num_frames=5, num_points=50, noise_px=0.0, seed=2)
    points, valid = triangulate_tracks(
        *(torch.from_numpy(a) for a in (scene.extrinsics, scene.intrinsics, scene.tracks)), torch.from_numpy(scene.mask)
    )
    assert valid.all()
    assert torch.allclose(points, torch.from_numpy(scene.points3d), atol=1e-6)


@needs_theseus
def test_refine_with_ba_on_tiny_model():
    vggt_module = pytest.importorskip("vggt.models.vggt")
    torch.manual_seed(0)
    model = vggt_module.VGGT.from_preset("tiny").eval()
    images = torch.rand(3, 3, 56, 56)
    with torch.no_grad():
        predictions = model(images)
    # Untrained camera heads can predict a zero field of view: that is refused, not refined.
    broken = dict(predictions, pose_enc=predictions["pose_enc"].clone())
    broken["pose_enc"][..., 7:] = 0.0
    with pytest.raises(ValueError, match="non-finite"):
        refine_with_ba(model, images, broken)
    # Plausible cameras (a synthetic ring) in place of the untrained camera head's.
    scene = make_scene(num_frames=3, num_points=1, seed=0)
    intrinsics = torch.from_numpy(scene.intrinsics).float() * 56 / 640
    intrinsics[:, 2, 2] = 1.0
    predictions["pose_enc"] = extri_intri_to_pose_encoding(
        torch.from_numpy(scene.extrinsics).float()[None], intrinsics[None], image_size_hw=(56, 56)
    )
    # Untrained weights track nothing useful: strict filters drop every track -> feed-forward cameras kept, said
    # by the value returned (no warning).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = refine_with_ba(
            model, images, predictions, vis_threshold=1.0, query_points_per_frame=16, num_reference_frames=1
        )
    assert not kept.refined and kept.num_registered == 0 and kept.extrinsics.shape == (3, 3, 4)
    # No filters: the post-step runs bundle adjustment end to end on whatever the head tracked, with either
    # backend, and the reprojection error of the tracked observations falls.
    for backend in ("theseus", "ceres"):
        refined = refine_with_ba(
            model,
            images,
            predictions,
            vis_threshold=-1,
            conf_threshold=-1,
            max_reproj_error=float("inf"),
            min_track_length=2,
            init="triangulate",
            query_points_per_frame=16,
            num_reference_frames=2,
            max_iterations=5,
            backend=backend,
        )
        assert refined.refined and refined.ba_result is not None and refined.num_registered == 3
        assert torch.isfinite(refined.extrinsics).all() and torch.isfinite(refined.intrinsics).all()
        final_error = torch.as_tensor(refined.ba_result.reprojection_error)
        observed = torch.isfinite(final_error)
        extrinsics, intrinsics = pose_encoding_to_extri_intri(predictions["pose_enc"][0], image_size_hw=(56, 56))
        start_points, _ = triangulate_tracks(extrinsics, intrinsics, refined.tracks, observed)
        start_pixels, _ = project_points(start_points, extrinsics, intrinsics)
        start_error = torch.linalg.norm(start_pixels - refined.tracks, dim=-1)[observed]
        assert observed.sum() > 10 and final_error[observed].mean() < start_error.mean()
    assert refined.tracks.shape[:2] == (3, refined.points3d.shape[0])
    observations = refined.point_observations()
    assert len(observations) == refined.points3d.shape[0]
    assert all(len(frames) == len(pixels) for frames, pixels in observations)


@needs_theseus
def test_cpu_solve_runs_on_one_thread_without_numpy_warnings(monkeypatch):
    seen = []
    from vggt.ba import solver

    original = solver._solve

    def recording_solve(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(solver, "_solve", recording_solve)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        scene = make_scene(num_frames=3, num_points=20)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's __array__ warning, raised inside Theseus, is silenced there
            bundle_adjust(*perturb(scene), scene.tracks, scene.mask, scene.image_size, max_iterations=3)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("backend", ["theseus", "ceres"])
def test_partial_registration_keeps_the_cameras_of_frames_without_tracks(backend):
    if backend == "theseus" and not _has_theseus():
        pytest.skip("theseus not installed (scripts/install_theseus.sh)")
    from vggt.ba.postprocess import MIN_FRAME_OBSERVATIONS, adjust_registered

    scene = make_scene(num_frames=5, num_points=80, noise_px=0.5, seed=4)
    extrinsics, intrinsics, points = (torch.from_numpy(a).float() for a in perturb(scene))
    tracks, mask = torch.from_numpy(scene.tracks).float(), torch.from_numpy(scene.mask)
    mask[4, MIN_FRAME_OBSERVATIONS - 1 :] = False  # frame 4: too few observations to be registered
    result = adjust_registered(extrinsics, intrinsics, points, tracks, mask, scene.image_size, backend)
    assert result.refined and result.registered.tolist() == [True] * 4 + [False] and result.num_registered == 4
    assert torch.equal(result.extrinsics[4].float(), extrinsics[4])  # kept as predicted
    assert not torch.allclose(result.extrinsics[1].float(), extrinsics[1])  # refined
    # One frame with tracks is not enough: nothing is refined, and the value says so.
    mask[1:] = False
    alone = adjust_registered(extrinsics, intrinsics, points, tracks, mask, scene.image_size, backend)
    assert not alone.refined and alone.num_registered == 0 and torch.equal(alone.extrinsics, extrinsics)
