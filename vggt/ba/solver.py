"""Track-based bundle adjustment with Theseus: Levenberg-Marquardt over SE(3) poses, focal lengths and points.

`bundle_adjust` runs in three steps: `vggt.ba.inputs.prepare_inputs` checks the arrays and turns them into one
batched float64 problem; `build_objective` and `_solve` set up and run the Theseus optimisation (cost functions
in `vggt.ba.costs`, the block-sparse linearization and the damped CHOLMOD / dense solvers in `vggt.ba.linear`);
`_collect_result` reads the refined variables back, with reprojection errors, inliers and the cost history, as
the caller's kind of array. The gauge is fixed by keeping camera 0 constant and the distance from camera 0 to
the farthest camera at its initial value (a stiff prior), so rotation, translation and scale of the world
cannot drift; or, with `fixed_frames` (known poses), by keeping those cameras (at least two) constant instead.
Problems in a batch share the observation pattern (the union of their masks); observations missing from one
problem get weight zero there.

Theseus is imported lazily: `import vggt.ba` works without it. `bundle_adjust` first calls `import_theseus()`,
which tells in one line what to install, and only then imports `vggt.ba.costs` and `vggt.ba.linear`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vggt.ba.inputs import PreparedInputs, check_options, prepare_inputs
from vggt.utils.geometry import project_points

INSTALL_HINT = (
    "bundle adjustment needs Theseus: run scripts/install_theseus.sh (apt-get install libsuitesparse-dev; "
    "pip install cython; pip install --no-build-isolation scikit-sparse==0.4.16 theseus-ai), i.e. vggt[ba]"
)

# Pixel residuals, so an observation counts as an inlier when its final error is below this many pixels.
DEFAULT_INLIER_THRESHOLD = 4.0
# Levenberg-Marquardt: initial damping (relative to diag(AtA)) and convergence tolerances on the objective.
INITIAL_DAMPING = 1.0e-3
ABS_ERR_TOLERANCE = 1.0e-10
REL_ERR_TOLERANCE = 1.0e-6
# backward_mode="truncated" differentiates through at most this many of the last iterations.
TRUNCATED_BACKWARD_ITERATIONS = 5
# The dense solver materialises the whole Jacobian; "auto" uses it below this many bytes.
DENSE_JACOBIAN_MAX_BYTES = 64 * 2**20
# torch intra-op threads of a CPU solve: each operation of a bundle-adjustment step is too small to share (2,000 to
# 30,000 observations: 4.6x and 3.3x slower with 2 threads than with 1 on a busy 2-core machine, whose threads
# spin-wait for each other; docs/performance.md).
CPU_SOLVE_THREADS = 1
# Theseus 0.2.3 converts a tensor with np.array() once per iteration, which numpy 2 answers with this warning (a
# hundred lines per solve); it is harmless (torch's __array__ copies), so it is silenced around the solve only.
# Cameras held constant fix the gauge (rotation, translation and scale) only from two on.
MIN_FIXED_FRAMES = 2
THESEUS_NUMPY_WARNING = "__array__ implementation doesn't accept a copy keyword"


@dataclass
class BundleAdjustmentResult:
    """Refined cameras and points; same array kind (numpy / torch) as the inputs, batch dim kept if given.

    extrinsics: [B?, S, 3, 4] camera-from-world. intrinsics: [B?, S, 3, 3]. points3d: [B?, N, 3].
    inlier_mask: [B?, S, N] observations whose final reprojection error is below `inlier_threshold` pixels.
    reprojection_error: [B?, S, N] final error in pixels (inf where not observed).
    cost_history: [B?, T] objective after each Levenberg-Marquardt iteration, the initial cost first.
    num_iterations: iterations run.
    """

    extrinsics: Any
    intrinsics: Any
    points3d: Any
    inlier_mask: Any
    reprojection_error: Any
    cost_history: Any
    num_iterations: int


def import_theseus():
    """The `theseus` module, or an ImportError with one line on how to install it."""
    try:
        import theseus
    except ImportError as error:  # theseus itself or scikit-sparse / SuiteSparse missing
        raise ImportError(f"{INSTALL_HINT} ({error})") from None
    return theseus


def _choose_solver(solver: str, device: torch.device, num_rows: int, num_cols: int, batch: int) -> str:
    """Pick "sparse" (CHOLMOD, on the CPU) or "dense" (torch Cholesky on `device`): dense on CUDA while small."""
    if solver != "auto":
        return solver
    if device.type == "cpu" or num_rows * num_cols * batch * 8 > DENSE_JACOBIAN_MAX_BYTES:
        return "sparse"
    return "dense"


@dataclass
class BundleProblem:
    """The Theseus objective `bundle_adjust` optimises and its variables.

    poses: S th.SE3 (camera 0, or the fixed frames, held constant). focals: one th.Vector [B, 1] (shared) or one
    per frame, frame i uses focals[frame_focal[i]]. points: th.Vector [B, 3 P] of the P points seen at least
    twice, original indices adjustable_ids [P]. num_columns: tangent dimensions of all optimised variables
    (columns of the Jacobian).
    refine_focal: whether the focals are optimised (else they are the given intrinsics, frame by frame).
    """

    objective: Any
    poses: list
    focals: list
    frame_focal: torch.Tensor
    points: Any
    adjustable_ids: torch.Tensor
    num_columns: int
    refine_focal: bool = True


def build_objective(
    extr: torch.Tensor,
    intr: torch.Tensor,
    points: torch.Tensor,
    obs: torch.Tensor,
    obs_mask: torch.Tensor,
    loss: str | None = "cauchy",
    loss_scale: float = 1.0,
    shared_focal: bool = True,
    refine_focal: bool = True,
    fixed_frames: Sequence[int] | None = None,
) -> BundleProblem:
    """Theseus objective of a checked, batched float64 problem: extr [B, S, 3, 4], intr [B, S, 3, 3], points
    [B, N, 3], obs [B, S, N, 2], obs_mask [B, S, N]. One ReprojectionCost for all observations plus the scale
    gauge (none with `fixed_frames`: cameras held constant, which fix the gauge). Fixed focal lengths
    (`refine_focal` False) are each frame's own, whatever `shared_focal` says."""
    th = import_theseus()
    from vggt.ba.costs import POINT_DOF, POSE_DOF, CauchyLoss, ReprojectionCost, add_scale_gauge

    device = extr.device
    batch, frames, num_points = obs_mask.shape

    # A point needs two observations to be constrained; the others are left as they are.
    observed_any = obs_mask.any(dim=0)  # [S, N]
    adjustable = observed_any.sum(dim=0) >= 2  # [N]
    frame_ids, point_ids = torch.nonzero(observed_any & adjustable[None], as_tuple=True)
    if frame_ids.numel() == 0:
        raise ValueError("no point is observed in two or more frames; nothing to adjust")
    adjustable_ids = torch.nonzero(adjustable, as_tuple=True)[0]  # [P]
    compact = torch.full((num_points,), -1, dtype=torch.long, device=device)
    compact[adjustable_ids] = torch.arange(len(adjustable_ids), device=device)
    fixed = fixed_camera_set(fixed_frames, frames)

    # Variables.
    poses = [th.SE3(tensor=extr[:, i], name=f"pose_{i}", disable_checks=True) for i in range(frames)]
    fx, fy = intr[..., 0, 0], intr[..., 1, 1]
    if shared_focal and refine_focal:
        focals = [th.Vector(tensor=fx.mean(dim=1, keepdim=True), name="focal")]
        frame_focal = torch.zeros(frames, dtype=torch.long, device=device)
    else:
        focals = [th.Vector(tensor=fx[:, i : i + 1], name=f"focal_{i}") for i in range(frames)]
        frame_focal = torch.arange(frames, device=device)
    point_var = th.Vector(tensor=points[:, adjustable_ids].reshape(batch, -1), name="points")
    loss_cls = {"cauchy": CauchyLoss, "huber": th.HuberLoss}.get(loss)
    log_radius = torch.full((1, 1), 2 * math.log(loss_scale), dtype=torch.float64, device=device)
    cost = ReprojectionCost(
        poses,
        focals,
        point_var,
        th.Variable(tensor=obs[:, frame_ids, point_ids], name="observations"),
        th.Variable(tensor=obs_mask[:, frame_ids, point_ids].to(torch.float64), name="weights"),
        th.Variable(tensor=intr[..., :2, 2], name="principal_points"),
        th.Variable(tensor=fy / fx, name="aspects"),
        th.Variable(tensor=log_radius, name="log_radius"),
        frame_index=frame_ids,
        point_index=compact[point_ids],
        frame_focal=frame_focal,
        loss_cls=loss_cls,
        refine_focal=refine_focal,
        name="reprojection",
        fixed_frames=fixed,
    )
    objective = th.Objective(dtype=torch.float64)
    objective.add(cost)
    if fixed_frames is None:
        add_scale_gauge(objective, poses, extr)
    objective.to(device)
    num_columns = POSE_DOF * (frames - len(fixed)) + POINT_DOF * len(adjustable_ids)
    num_columns += len(focals) if refine_focal else 0
    return BundleProblem(objective, poses, focals, frame_focal, point_var, adjustable_ids, num_columns, refine_focal)


def bundle_adjust(
    extrinsics,
    intrinsics,
    points3d,
    tracks,
    mask,
    image_size: tuple[int, int] | None = None,
    loss: str | None = "cauchy",
    loss_scale: float = 1.0,
    shared_focal: bool = True,
    refine_focal: bool = True,
    max_iterations: int = 100,
    inlier_threshold: float = DEFAULT_INLIER_THRESHOLD,
    backward_mode: str = "implicit",
    linear_solver: str = "auto",
    verbose: bool = False,
    num_threads: int | None = CPU_SOLVE_THREADS,
    fixed_frames: Sequence[int] | None = None,
) -> BundleAdjustmentResult:
    """Jointly refine camera poses, focal lengths and 3D points so that they reproject onto the tracks.

    Args:
        extrinsics: [S, 3, 4] or [B, S, 3, 4] OpenCV camera-from-world.
        intrinsics: [S, 3, 3] or [B, S, 3, 3] pinhole; principal points and fy / fx stay fixed.
        points3d: [N, 3] or [B, N, 3] world points.
        tracks: [S, N, 2] or [B, S, N, 2] pixel `(x, y)` of each point in each frame.
        mask: [S, N] or [B, S, N] bool, which tracks are observed.
        image_size: (height, width); when given, observations outside the image are ignored.
        loss: robust loss on the pixel residual, "cauchy", "huber" or None (plain least squares).
        loss_scale: residual norm in pixels where the robust loss starts to flatten.
        shared_focal: one focal length for all frames (initialised from the mean), else one per frame.
        refine_focal: optimise focal lengths; False keeps every frame's intrinsics exactly as given (known
            calibrations), whatever `shared_focal` says.
        max_iterations: Levenberg-Marquardt iterations at most.
        inlier_threshold: pixels; observations with a smaller final error are inliers.
        backward_mode: how gradients flow through the solver: "implicit" (to the tracks and every other input
            that is not an initial value), "unroll" or "truncated" (through the iterations, also to initial values).
        linear_solver: "sparse" (CHOLMOD; CUDA tensors are solved on the CPU), "dense" (torch Cholesky on the
            inputs' device, for small problems) or "auto" (sparse on CPU, dense on CUDA while A is small).
        num_threads: torch's intra-op threads while a CPU problem is solved (restored after); None: as set.
        fixed_frames: frames whose cameras stay exactly as given (known poses; at least two, which fix the
            gauge); None: camera 0 and the distance to the farthest camera fix it.

    Returns:
        BundleAdjustmentResult with the same array kind, device and float dtype as `extrinsics`.
    """
    import_theseus()
    check_options(loss, backward_mode, linear_solver, loss_scale, max_iterations)
    inputs = prepare_inputs(extrinsics, intrinsics, points3d, tracks, mask, image_size)
    problem = build_objective(
        inputs.extrinsics,
        inputs.intrinsics,
        inputs.points3d,
        inputs.tracks,
        inputs.mask,
        loss,
        loss_scale,
        shared_focal,
        refine_focal,
        fixed_frames,
    )
    with intra_op_threads(num_threads if inputs.device.type == "cpu" else None):
        info = _solve(problem, inputs.device, max_iterations, backward_mode, linear_solver, verbose)
    return _collect_result(problem, inputs, info, inlier_threshold)


def fixed_camera_set(fixed_frames: Sequence[int] | None, frames: int) -> frozenset[int]:
    """The frames whose cameras bundle adjustment holds constant: `fixed_frames` (at least two distinct frames
    among `frames`), or camera 0 when None."""
    if fixed_frames is None:
        return frozenset({0})
    fixed = frozenset(int(i) for i in fixed_frames)
    if len(fixed) < MIN_FIXED_FRAMES or not all(0 <= i < frames for i in fixed):
        raise ValueError(
            f"fixed_frames must name at least {MIN_FIXED_FRAMES} of the {frames} frames, got {sorted(fixed)}"
        )
    return fixed


@contextlib.contextmanager
def intra_op_threads(count: int | None):
    """torch's intra-op thread count set to `count` inside the block (unchanged when None), restored after."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _solve(
    problem: BundleProblem,
    device: torch.device,
    max_iterations: int,
    backward_mode: str,
    linear_solver: str,
    verbose: bool,
):
    """Run Levenberg-Marquardt on `problem`'s objective, whose variables end at the solution; Theseus' info
    (its `err_history` [B, max_iterations + 1] is padded with inf after the last iteration)."""
    th = import_theseus()
    from vggt.ba.linear import DampedSolver, LevenbergMarquardt

    objective = problem.objective
    batch = problem.points.tensor.shape[0]
    solver = _choose_solver(linear_solver, device, objective.dim(), problem.num_columns, batch)
    backend = {"sparse": "cholmod", "dense": "dense"}[solver]
    # One cost function for all observations: Theseus' cost vectorization has nothing to group.
    optimizer = LevenbergMarquardt(
        objective,
        linear_solver_cls=DampedSolver,
        linear_solver_kwargs={"backend": backend},
        vectorize=False,
        max_iterations=max_iterations,
        step_size=1.0,
        abs_err_tolerance=ABS_ERR_TOLERANCE,
        rel_err_tolerance=REL_ERR_TOLERANCE,
    )
    layer = th.TheseusLayer(optimizer, vectorize=False)
    optimizer_kwargs = {
        "track_err_history": True,
        "verbose": verbose,
        "damping": INITIAL_DAMPING,
        "adaptive_damping": True,
        "ellipsoidal_damping": True,
        "backward_mode": backward_mode,
    }
    if backward_mode == "truncated":
        optimizer_kwargs["backward_num_iterations"] = min(TRUNCATED_BACKWARD_ITERATIONS, max_iterations)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=THESEUS_NUMPY_WARNING, category=DeprecationWarning)
        _, info = layer.forward(optimizer_kwargs=optimizer_kwargs)
    return info


def _collect_result(
    problem: BundleProblem, inputs: PreparedInputs, info, inlier_threshold: float
) -> BundleAdjustmentResult:
    """The solved variables of `problem` as a BundleAdjustmentResult in the caller's array kind."""
    extr, intr, points, obs, obs_mask = (
        inputs.extrinsics,
        inputs.intrinsics,
        inputs.points3d,
        inputs.tracks,
        inputs.mask,
    )
    adjustable_ids = problem.adjustable_ids
    # Variables one problem of a batch does not constrain (a frame it does not observe, a point it sees fewer
    # than twice) keep their initial values there.
    observations_per_frame = obs_mask.sum(dim=2)  # [B, S]
    refined_extr = torch.stack([p.tensor for p in problem.poses], dim=1)
    refined_extr = torch.where((observations_per_frame > 0)[..., None, None], refined_extr, extr)
    refined_points = points.clone()
    constrained = (obs_mask.sum(dim=1) >= 2)[:, adjustable_ids, None]  # [B, P, 1]
    refined_points[:, adjustable_ids] = torch.where(
        constrained, problem.points.tensor.view(points.shape[0], -1, points.shape[-1]), points[:, adjustable_ids]
    )
    refined_intr = intr.clone()
    if problem.refine_focal:  # fixed intrinsics are handed back untouched, not rebuilt from focal and aspect
        refined_fx = torch.cat([f.tensor for f in problem.focals], dim=1)[:, problem.frame_focal]  # [B, S]
        refined_intr[..., 0, 0] = refined_fx
        refined_intr[..., 1, 1] = refined_fx * (intr[..., 1, 1] / intr[..., 0, 0])

    pixels, depth = project_points(refined_points[:, None], refined_extr, refined_intr)
    error = torch.linalg.norm(pixels - obs, dim=-1)
    error = torch.where(obs_mask & (depth > 0), error, torch.full_like(error, float("inf")))
    inliers = obs_mask & (error < inlier_threshold)

    # Theseus pads the history with inf after the last iteration; the implicit-gradient step adds no entry.
    history = info.err_history[:, torch.isfinite(info.err_history).all(dim=0)]
    num_iterations = history.shape[1] - 1
    outputs = inputs.restore([refined_extr, refined_intr, refined_points, inliers, error, history])
    return BundleAdjustmentResult(*outputs, num_iterations=num_iterations)
