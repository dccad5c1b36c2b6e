"""Track-based bundle adjustment with Theseus: Levenberg-Marquardt over SE(3) poses, focal lengths and points.

One Theseus cost function per observation (frame i sees point j) holds the reprojection residual
`project(K_i, T_i X_j) - track_ij` in pixels, optionally wrapped in a robust loss. The gauge is fixed by keeping
camera 0 constant and the distance from camera 0 to the farthest camera at its initial value (a stiff prior), so
rotation, translation and scale of the world cannot drift. Problems in a batch share the observation pattern (the
union of their masks); observations missing from one problem get weight zero there.

Theseus is imported lazily: `import vggt.ba` works without it, `bundle_adjust` tells what to install.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vggt.utils.geometry import project_points

INSTALL_HINT = (
    "bundle adjustment needs Theseus: run scripts/install_theseus.sh (apt-get install libsuitesparse-dev; "
    "pip install cython; pip install --no-build-isolation scikit-sparse==0.4.16 theseus-ai), i.e. vggt[ba]"
)

LOSSES = ("cauchy", "huber", None)
BACKWARD_MODES = ("implicit", "unroll", "truncated")
LINEAR_SOLVERS = ("auto", "sparse", "dense")

# Pixel residuals, so an observation counts as an inlier when its final error is below this many pixels.
DEFAULT_INLIER_THRESHOLD = 4.0
# Weight of the scale prior, residual `(|C_k - C_0| / d_0 - 1)`; it only fixes a gauge, any stiff value works.
SCALE_GAUGE_WEIGHT = 1.0e3
# Camera centres closer than this fraction of the scene extent count as coincident (no usable scale anchor).
MIN_BASELINE_FRACTION = 1.0e-6
# Weight of the prior keeping a variable at its initial value in problems of a batch that do not observe it.
UNOBSERVED_PRIOR_WEIGHT = 1.0
# Camera-space depth below which a point is clamped when dividing by z.
MIN_DEPTH = 1.0e-6
# Levenberg-Marquardt: initial damping and convergence tolerances on the objective.
INITIAL_DAMPING = 1.0e-3
ABS_ERR_TOLERANCE = 1.0e-10
REL_ERR_TOLERANCE = 1.0e-6
# The dense solver materialises the whole Jacobian; "auto" uses it below this many bytes.
DENSE_JACOBIAN_MAX_BYTES = 64 * 2**20


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


@functools.lru_cache(maxsize=1)
def _theseus_classes() -> dict[str, type]:
    """Cost functions and solver pieces that subclass Theseus types (defined once Theseus is importable)."""
    th = import_theseus()

    class CauchyLoss(th.RobustLoss):
        """rho(s) = r log(1 + s / r) on the squared residual norm s, r the squared scale (Ceres' CauchyLoss)."""

        @staticmethod
        def _evaluate_impl(x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
            return radius * torch.log1p(x / radius)

        @staticmethod
        def _linearize_impl(x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
            return 1.0 / (1.0 + x / radius)

    class ReprojectionCost(th.CostFunction):
        """Residual [2] of one observation: pinhole projection of `point` by `pose`, `focal` minus `observation`.

        fx = focal, fy = focal * aspect, principal point fixed. The pose or the focal may be held constant.
        """

        def __init__(
            self,
            pose,
            focal,
            point,
            observation,
            principal_point,
            aspect,
            weight,
            fixed_pose: bool = False,
            fixed_focal: bool = False,
            name: str | None = None,
        ):
            super().__init__(weight, name=name)
            self.pose, self.focal, self.point = pose, focal, point
            self.observation, self.principal_point, self.aspect = observation, principal_point, aspect
            self.fixed_pose, self.fixed_focal = fixed_pose, fixed_focal
            for attr, fixed in (("pose", fixed_pose), ("focal", fixed_focal), ("point", False)):
                (self.register_aux_var if fixed else self.register_optim_var)(attr)
            self.register_aux_vars(["observation", "principal_point", "aspect"])

        def _residual(self, with_jacobians: bool):
            jac_transform: list[torch.Tensor] = [] if with_jacobians else None
            point_cam = self.pose.transform_from(self.point, jacobians=jac_transform).tensor
            x, y = point_cam[:, 0:1], point_cam[:, 1:2]
            z = point_cam[:, 2:3].clamp(min=MIN_DEPTH)
            focal, aspect = self.focal.tensor, self.aspect.tensor
            x_n, y_n = x / z, y / z
            pixels = torch.cat((focal * x_n, focal * aspect * y_n), dim=1) + self.principal_point.tensor
            residual = pixels - self.observation.tensor
            if not with_jacobians:
                return residual, None
            # d pixels / d point_cam: [B, 2, 3]
            zeros = torch.zeros_like(z)
            fx, fy = focal, focal * aspect
            d_proj = torch.stack(
                (
                    torch.cat((fx / z, zeros, -fx * x_n / z), dim=1),
                    torch.cat((zeros, fy / z, -fy * y_n / z), dim=1),
                ),
                dim=1,
            )
            jacobians = []
            if not self.fixed_pose:
                jacobians.append(d_proj @ jac_transform[0])
            if not self.fixed_focal:
                jacobians.append(torch.cat((x_n, aspect * y_n), dim=1)[:, :, None])
            jacobians.append(d_proj @ jac_transform[1])
            return residual, jacobians

        def error(self) -> torch.Tensor:
            return self._residual(with_jacobians=False)[0]

        def jacobians(self) -> tuple[list[torch.Tensor], torch.Tensor]:
            residual, jacobians = self._residual(with_jacobians=True)
            return jacobians, residual

        def dim(self) -> int:
            return 2

        def _copy_impl(self, new_name: str | None = None) -> ReprojectionCost:
            return ReprojectionCost(
                self.pose.copy(),
                self.focal.copy(),
                self.point.copy(),
                self.observation.copy(),
                self.principal_point.copy(),
                self.aspect.copy(),
                self.weight.copy(),
                fixed_pose=self.fixed_pose,
                fixed_focal=self.fixed_focal,
                name=new_name,
            )

    class ScaleGaugeCost(th.CostFunction):
        """Residual [1] `|C - C_0| / distance - 1` on camera centres: keeps the scale of the reconstruction."""

        def __init__(self, pose, pose_0, distance, weight, name: str | None = None):
            super().__init__(weight, name=name)
            self.pose, self.pose_0, self.distance = pose, pose_0, distance
            self.register_optim_var("pose")
            self.register_aux_vars(["pose_0", "distance"])

        @staticmethod
        def _center(pose, jacobians=None) -> torch.Tensor:
            origin = pose.tensor.new_zeros(pose.tensor.shape[0], 3)
            return pose.transform_to(origin, jacobians=jacobians).tensor  # world-from-camera applied to 0

        def _residual(self, with_jacobians: bool):
            jac_center: list[torch.Tensor] = [] if with_jacobians else None
            offset = self._center(self.pose, jac_center) - self._center(self.pose_0)
            length = torch.linalg.norm(offset, dim=1, keepdim=True)
            residual = length / self.distance.tensor - 1.0
            if not with_jacobians:
                return residual, None
            d_length = (offset / (length * self.distance.tensor))[:, None, :]  # [B, 1, 3]
            return residual, [d_length @ jac_center[0]]

        def error(self) -> torch.Tensor:
            return self._residual(with_jacobians=False)[0]

        def jacobians(self) -> tuple[list[torch.Tensor], torch.Tensor]:
            residual, jacobians = self._residual(with_jacobians=True)
            return jacobians, residual

        def dim(self) -> int:
            return 1

        def _copy_impl(self, new_name: str | None = None) -> ScaleGaugeCost:
            return ScaleGaugeCost(
                self.pose.copy(), self.pose_0.copy(), self.distance.copy(), self.weight.copy(), name=new_name
            )

    class AdaptiveCholmodSolver(th.CholmodSparseSolver):
        """CHOLMOD solver that takes one damping value per problem of the batch, so that LM can adapt it."""

        def solve(self, damping=None, **kwargs) -> torch.Tensor:
            if not isinstance(damping, torch.Tensor):
                return super().solve(damping=damping, **kwargs)
            from theseus.optimizer.autograd import CholmodSolveFunction

            lin = self.linearization
            deltas = [
                CholmodSolveFunction.apply(
                    lin.A_val[b : b + 1],
                    lin.b[b : b + 1],
                    lin.structure(),
                    self._symbolic_cholesky_decomposition,
                    float(damping.reshape(-1)[b]),
                    lin.detached_hessian,
                )
                for b in range(lin.A_val.shape[0])
            ]
            return torch.cat(deltas, dim=0)

    class LevenbergMarquardt(th.LevenbergMarquardt):
        """Theseus LM; with `AdaptiveCholmodSolver` the damping adapts (plain CHOLMOD only takes a fixed one)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if isinstance(self.linear_solver, AdaptiveCholmodSolver):
                self._allows_adaptive = True

    return {
        "CauchyLoss": CauchyLoss,
        "ReprojectionCost": ReprojectionCost,
        "ScaleGaugeCost": ScaleGaugeCost,
        "AdaptiveCholmodSolver": AdaptiveCholmodSolver,
        "LevenbergMarquardt": LevenbergMarquardt,
    }


# --- input handling ---------------------------------------------------------------------------------------------


def _as_tensor(name: str, array, device=None) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array).to(device=device)
    if isinstance(array, torch.Tensor):
        return array
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")


def _check_inputs(extrinsics, intrinsics, points3d, tracks, mask) -> tuple[int, int, int]:
    """Validate batched shapes [B, S, 3, 4], [B, S, 3, 3], [B, N, 3], [B, S, N, 2], [B, S, N]; return B, S, N."""
    batch, frames = extrinsics.shape[:2]
    num_points = points3d.shape[1]
    expected = {
        "extrinsics": (extrinsics, (batch, frames, 3, 4)),
        "intrinsics": (intrinsics, (batch, frames, 3, 3)),
        "points3d": (points3d, (batch, num_points, 3)),
        "tracks": (tracks, (batch, frames, num_points, 2)),
        "mask": (mask, (batch, frames, num_points)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, expected {shape} for {frames} frames and {num_points} "
                "points (extrinsics [S, 3, 4], intrinsics [S, 3, 3], points3d [N, 3], tracks [S, N, 2], mask [S, N])"
            )
    if frames < 2:
        raise ValueError(f"bundle adjustment needs at least two frames, got {frames}")
    for name, tensor in (("extrinsics", extrinsics), ("intrinsics", intrinsics), ("points3d", points3d)):
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains non-finite values; drop or fix them before bundle adjustment")
    if not torch.isfinite(tracks[mask]).all():
        raise ValueError("tracks contain non-finite values where mask is True; set mask False for those")
    if (intrinsics[..., 0, 0] <= 0).any() or (intrinsics[..., 1, 1] <= 0).any():
        raise ValueError("intrinsics must have positive focal lengths")
    return batch, frames, num_points


def _choose_solver(solver: str, device: torch.device, num_rows: int, num_cols: int, batch: int) -> str:
    if solver != "auto":
        return solver
    if device.type == "cpu":
        return "sparse"
    # On CUDA the sparse LU solver needs Theseus' CUDA extension, built only when CUDA was visible at install.
    try:
        from theseus.extlib import cusolver_lu_solver  # noqa: F401
    except ImportError:
        return "dense"
    return "sparse" if num_rows * num_cols * batch * 8 > DENSE_JACOBIAN_MAX_BYTES else "dense"


# --- the solver ---------------------------------------------------------------------------------------------------


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
        refine_focal: optimise focal lengths (else keep them).
        max_iterations: Levenberg-Marquardt iterations at most.
        inlier_threshold: pixels; observations with a smaller final error are inliers.
        backward_mode: how gradients flow through the solver: "implicit" (to the tracks and every other input
            that is not an initial value), "unroll" or "truncated" (through the iterations, also to initial values).
        linear_solver: "sparse" (CHOLMOD on CPU, cuSolver LU on CUDA), "dense" (Cholesky) or "auto".

    Returns:
        BundleAdjustmentResult with the same array kind, device and float dtype as `extrinsics`.
    """
    th = import_theseus()
    classes = _theseus_classes()
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if backward_mode not in BACKWARD_MODES:
        raise ValueError(f"backward_mode must be one of {BACKWARD_MODES}, got {backward_mode!r}")
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {linear_solver!r}")
    if not loss_scale > 0 or max_iterations < 1:
        raise ValueError(f"loss_scale must be > 0 and max_iterations >= 1, got {loss_scale} and {max_iterations}")

    is_numpy = isinstance(extrinsics, np.ndarray)
    out_device = extrinsics.device if isinstance(extrinsics, torch.Tensor) else torch.device("cpu")
    out_dtype = extrinsics.dtype if isinstance(extrinsics, torch.Tensor) else torch.from_numpy(extrinsics[:0]).dtype
    if not out_dtype.is_floating_point:
        out_dtype = torch.float64
    names = ("extrinsics", "intrinsics", "points3d", "tracks", "mask")
    tensors = [_as_tensor(n, a, out_device) for n, a in zip(names, (extrinsics, intrinsics, points3d, tracks, mask))]
    unbatched = tensors[0].ndim == 3
    if unbatched:
        tensors = [t[None] for t in tensors]
    if any(t.device != out_device for t in tensors):
        raise ValueError(f"all inputs must be on one device, got {[str(t.device) for t in tensors]}")
    # Theseus works in float64 here: pixel residuals on scenes of a few units need the precision.
    extr, intr, points, obs = (t.to(torch.float64) for t in tensors[:4])
    obs_mask = tensors[4].to(torch.bool)
    batch, frames, num_points = _check_inputs(extr, intr, points, obs, obs_mask)
    if image_size is not None:
        height, width = image_size
        inside = (obs[..., 0] >= -0.5) & (obs[..., 0] <= width - 0.5)
        inside &= (obs[..., 1] >= -0.5) & (obs[..., 1] <= height - 0.5)
        obs_mask = obs_mask & inside
    obs = torch.where(obs_mask[..., None], obs, torch.zeros_like(obs))

    # A point needs two observations to be constrained; the others are left as they are.
    observed_any = obs_mask.any(dim=0)  # [S, N]
    adjustable = observed_any.sum(dim=0) >= 2  # [N]
    frame_ids, point_ids = torch.nonzero(observed_any & adjustable[None], as_tuple=True)
    if frame_ids.numel() == 0:
        raise ValueError("no point is observed in two or more frames; nothing to adjust")
    frame_ids_list, point_ids_list = frame_ids.tolist(), point_ids.tolist()

    # Variables.
    poses = [th.SE3(tensor=extr[:, i], name=f"pose_{i}", disable_checks=True) for i in range(frames)]
    fx, fy = intr[..., 0, 0], intr[..., 1, 1]
    if shared_focal:
        shared = th.Vector(tensor=fx.mean(dim=1, keepdim=True), name="focal")
        focals = [shared] * frames
    else:
        focals = [th.Vector(tensor=fx[:, i : i + 1], name=f"focal_{i}") for i in range(frames)]
    aspects = [th.Variable(tensor=(fy / fx)[:, i : i + 1], name=f"aspect_{i}") for i in range(frames)]
    principal = [th.Variable(tensor=intr[:, i, :2, 2], name=f"principal_{i}") for i in range(frames)]
    point_vars = {j: th.Point3(tensor=points[:, j], name=f"point_{j}") for j in sorted(set(point_ids_list))}
    log_radius = th.Variable(tensor=torch.full((1, 1), 2 * math.log(loss_scale), dtype=torch.float64), name="log_r")
    loss_cls = {"cauchy": classes["CauchyLoss"], "huber": th.HuberLoss}.get(loss)
    weights = obs_mask.to(torch.float64)

    objective = th.Objective(dtype=torch.float64)
    for i, j in zip(frame_ids_list, point_ids_list):
        cost = classes["ReprojectionCost"](
            poses[i],
            focals[i],
            point_vars[j],
            th.Variable(tensor=obs[:, i, j], name=f"obs_{i}_{j}"),
            principal[i],
            aspects[i],
            th.ScaleCostWeight(th.Variable(tensor=weights[:, i, j, None], name=f"w_{i}_{j}")),
            fixed_pose=i == 0,
            fixed_focal=not refine_focal,
            name=f"reproj_{i}_{j}",
        )
        if loss_cls is not None:
            cost = th.RobustCostFunction(cost, loss_cls, log_radius, name=f"robust_{i}_{j}")
        objective.add(cost)
    anchor = _add_scale_gauge(th, objective, poses, extr)
    _add_priors_on_unobserved(th, objective, poses, point_vars, obs_mask)

    num_rows = 2 * len(frame_ids_list) + (anchor is not None)
    num_cols = 6 * (frames - 1) + 3 * len(point_vars) + (len(set(map(id, focals))) if refine_focal else 0)
    solver_kind = _choose_solver(linear_solver, out_device, num_rows, num_cols, batch)
    if solver_kind == "dense":
        solver_cls = th.CholeskyDenseSolver
    elif out_device.type == "cpu":
        solver_cls = classes["AdaptiveCholmodSolver"]
    else:
        solver_cls = th.LUCudaSparseSolver
    optimizer = classes["LevenbergMarquardt"](
        objective,
        linear_solver_cls=solver_cls,
        vectorize=True,
        max_iterations=max_iterations,
        step_size=1.0,
        abs_err_tolerance=ABS_ERR_TOLERANCE,
        rel_err_tolerance=REL_ERR_TOLERANCE,
    )
    objective.to(out_device)
    layer = th.TheseusLayer(optimizer)
    optimizer_kwargs = {
        "track_err_history": True,
        "verbose": verbose,
        "damping": INITIAL_DAMPING,
        "adaptive_damping": True,
        "backward_mode": backward_mode,
    }
    if backward_mode == "truncated":
        optimizer_kwargs["backward_num_iterations"] = min(5, max_iterations)
    _, info = layer.forward(optimizer_kwargs=optimizer_kwargs)

    refined_extr = torch.stack([p.tensor for p in poses], dim=1)
    refined_points = points.clone()
    if point_vars:
        index = torch.tensor(sorted(point_vars), device=out_device)
        refined_points[:, index] = torch.stack([point_vars[j].tensor for j in sorted(point_vars)], dim=1)
    refined_fx = torch.cat([f.tensor for f in focals], dim=1)  # [B, S]
    refined_intr = intr.clone()
    refined_intr[..., 0, 0] = refined_fx
    refined_intr[..., 1, 1] = refined_fx * (fy / fx)

    pixels, depth = project_points(refined_points[:, None], refined_extr, refined_intr)
    error = torch.linalg.norm(pixels - obs, dim=-1)
    error = torch.where(obs_mask & (depth > 0), error, torch.full_like(error, float("inf")))
    inliers = obs_mask & (error < inlier_threshold)

    history = info.err_history
    num_iterations = int(info.converged_iter.max()) if (info.converged_iter >= 0).all() else max_iterations
    history = history[:, : num_iterations + 1]

    outputs = [refined_extr, refined_intr, refined_points, inliers, error, history]
    outputs = [t if t.dtype == torch.bool else t.to(out_dtype) for t in outputs]
    if unbatched:
        outputs = [t[0] for t in outputs]
    if is_numpy:
        outputs = [t.detach().cpu().numpy() for t in outputs]
    return BundleAdjustmentResult(*outputs, num_iterations=num_iterations)


def _add_priors_on_unobserved(th, objective, poses, point_vars, obs_mask: torch.Tensor) -> None:
    """Hold still the variables that one problem of the batch does not observe (another one does): without a
    prior their rows of the normal equations are empty and the factorisation fails.

    obs_mask: [B, S, N].
    """
    counts_per_point = obs_mask.sum(dim=1)  # [B, N]
    counts_per_frame = obs_mask.sum(dim=2)  # [B, S]
    candidates = [(var, counts_per_point[:, j] < 2) for j, var in point_vars.items()]
    candidates += [(poses[i], counts_per_frame[:, i] == 0) for i in range(1, len(poses))]
    for var, unobserved in candidates:
        if not unobserved.any():
            continue
        weight = th.Variable(
            unobserved.to(torch.float64)[:, None] * UNOBSERVED_PRIOR_WEIGHT, name=f"prior_w_{var.name}"
        )
        target = var.copy(new_name=f"prior_{var.name}")
        objective.add(th.Difference(var, target, th.ScaleCostWeight(weight), name=f"prior_cost_{var.name}"))


def _add_scale_gauge(th, objective, poses, extrinsics: torch.Tensor) -> int | None:
    """Pin the distance between camera 0 and the camera farthest from it; return that camera (None if all coincide).

    extrinsics: [B, S, 3, 4].
    """
    rotation, translation = extrinsics[..., :3], extrinsics[..., 3]
    centers = -(rotation.transpose(-1, -2) @ translation[..., None])[..., 0]  # [B, S, 3]
    distances = torch.linalg.norm(centers - centers[:, :1], dim=-1)  # [B, S]
    extent = distances.max().clamp(min=1.0)
    anchor = int(distances.min(dim=0).values.argmax())
    if distances[:, anchor].min() <= MIN_BASELINE_FRACTION * extent:
        return None
    target = th.Variable(tensor=distances[:, anchor : anchor + 1].clone(), name="gauge_distance")
    weight = th.ScaleCostWeight(th.Variable(torch.full((1, 1), SCALE_GAUGE_WEIGHT, dtype=torch.float64)))
    objective.add(_theseus_classes()["ScaleGaugeCost"](poses[anchor], poses[0], target, weight, name="scale_gauge"))
    return anchor
