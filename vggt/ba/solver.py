"""Track-based bundle adjustment with Theseus: Levenberg-Marquardt over SE(3) poses, focal lengths and points.

One Theseus cost function holds the reprojection residuals `project(K_i, T_i X_j) - track_ij` (pixels) of all
observations, evaluated in a few batched tensor operations, each optionally under a robust loss; its Jacobian
comes as small dense blocks that `vggt.ba.linear.BlockSparseLinearization` scatters into a sparse matrix in one
gather, and the Marquardt-damped normal equations are solved with CHOLMOD (or a dense Cholesky on small
problems). The gauge is fixed by keeping camera 0 constant and the distance from camera 0 to the farthest camera
at its initial value (a stiff prior), so rotation, translation and scale of the world cannot drift. Problems in a
batch share the observation pattern (the union of their masks); observations missing from one problem get weight
zero there.

Theseus is imported lazily: `import vggt.ba` works without it, `bundle_adjust` tells what to install.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vggt.ba.linear import theseus_linear_classes
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
# Camera-space depth below which a point is clamped when dividing by z.
MIN_DEPTH = 1.0e-6
# Added under the square roots of the robust loss and its derivative (as Theseus' RobustCostFunction does).
ROBUST_EPS = 1.0e-20
POSE_DOF, POINT_DOF = 6, 3
# Levenberg-Marquardt: initial damping (relative to diag(AtA)) and convergence tolerances on the objective.
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
        """Residuals [B, 2 M] of all M observations at once: observation k is point `point_index[k]` seen in frame
        `frame_index[k]`, residual `weight_k * (project(K_f, T_f X_p) - track_k)` in pixels.

        fx = focal, fy = focal * aspect, principal point fixed. Camera 0 (the gauge) is held constant, and so
        are the focal lengths unless `refine_focal`. With a robust loss rho each observation's residual pair has
        squared norm rho(|r|^2) in `error()`, and is scaled by sqrt(rho'(|r|^2)) in the linearization (as
        Theseus' RobustCostFunction does for one residual block). `block_jacobians` gives the Jacobians as
        [B, M, 2, 10] blocks (pose 6, focal 1, point 3) for BlockSparseLinearization; `jacobians` gives Theseus'
        dense per-variable ones, for its stock linearizations.
        """

        block_rows = 2

        def __init__(
            self,
            poses,
            focals,
            points,
            observations,
            weights,
            principal_points,
            aspects,
            log_radius,
            frame_index: torch.Tensor,
            point_index: torch.Tensor,
            frame_focal: torch.Tensor,
            loss_cls=None,
            refine_focal: bool = True,
            name: str | None = None,
        ):
            dtype = observations.tensor.dtype
            super().__init__(th.ScaleCostWeight(torch.ones(1, 1, dtype=dtype)), name=name)
            self.poses, self.focals, self.points = list(poses), list(focals), points
            self.observations, self.weights = observations, weights
            self.principal_points, self.aspects, self.log_radius = principal_points, aspects, log_radius
            self.frame_index, self.point_index, self.frame_focal = frame_index, point_index, frame_focal
            self.loss = loss_cls() if loss_cls is not None else None
            self.refine_focal = refine_focal
            for i, pose in enumerate(self.poses):
                setattr(self, f"pose_{i}", pose)
                (self.register_aux_var if i == 0 else self.register_optim_var)(f"pose_{i}")
            for k, focal in enumerate(self.focals):
                setattr(self, f"focal_{k}", focal)
                (self.register_optim_var if refine_focal else self.register_aux_var)(f"focal_{k}")
            self.register_optim_var("points")
            self.register_aux_vars(["observations", "weights", "principal_points", "aspects", "log_radius"])
            # Observation k's frame focal variable, for the Jacobian layout.
            self._obs_focal = frame_focal[frame_index]

        def _evaluate(self, with_jacobians: bool):
            """Residuals [B, M, 2] (robust-scaled for the linearization when with_jacobians) and Jacobian blocks
            [B, M, 2, 10], or the robust `error()` values [B, M, 2] and None."""
            frame, point = self.frame_index, self.point_index
            poses = torch.stack([pose.tensor for pose in self.poses], dim=1)  # [B, S, 3, 4]
            rotation, translation = poses[:, frame, :, :3], poses[:, frame, :, 3]  # [B, M, 3, 3], [B, M, 3]
            world = self.points.tensor.view(self.points.tensor.shape[0], -1, 3)[:, point]  # [B, M, 3]
            camera = (rotation @ world[..., None])[..., 0] + translation
            z = camera[..., 2].clamp(min=MIN_DEPTH)
            x_n, y_n = camera[..., 0] / z, camera[..., 1] / z
            focal = torch.cat([f.tensor for f in self.focals], dim=1)[:, self._obs_focal]  # [B, M]
            aspect = self.aspects.tensor[:, frame]
            weight = self.weights.tensor[..., None]  # [B, M, 1]
            normalized = torch.stack((x_n, aspect * y_n), dim=-1)  # d pixel / d focal, [B, M, 2]
            pixels = focal[..., None] * normalized + self.principal_points.tensor[:, frame]
            residual = weight * (pixels - self.observations.tensor)
            squared_norm = residual.square().sum(dim=-1, keepdim=True)
            log_radius = self.log_radius.tensor
            if not with_jacobians:
                if self.loss is None:
                    return residual, None
                rho = self.loss.evaluate(squared_norm, log_radius)
                return ((rho / 2 + ROBUST_EPS).sqrt()).expand_as(residual), None
            fx, fy, zeros = focal, focal * aspect, torch.zeros_like(z)
            d_pixel_d_camera = torch.stack(
                (
                    torch.stack((fx / z, zeros, -fx * x_n / z), dim=-1),
                    torch.stack((zeros, fy / z, -fy * y_n / z), dim=-1),
                ),
                dim=-2,
            )  # [B, M, 2, 3]
            d_point = weight[..., None] * d_pixel_d_camera @ rotation
            # Theseus' SE3 retraction T exp(v, w): d camera / d(v, w) = R [I, -[X]x].
            d_rotation = torch.linalg.cross(world[..., None, :].expand_as(d_point), d_point, dim=-1)
            blocks = torch.cat((d_point, d_rotation, weight[..., None] * normalized[..., None], d_point), dim=-1)
            if self.loss is not None:
                scale = (self.loss.linearize(squared_norm, log_radius) + ROBUST_EPS).sqrt()  # [B, M, 1]
                residual, blocks = scale * residual, scale[..., None] * blocks
            return residual, blocks

        def error(self) -> torch.Tensor:
            residual, _ = self._evaluate(with_jacobians=False)
            return residual.flatten(1)

        def block_jacobians(self) -> tuple[torch.Tensor, torch.Tensor]:
            """Jacobian blocks [B, M, 2, 10] (pose 6, focal 1, point 3) and linearization residual [B, 2 M]."""
            residual, blocks = self._evaluate(with_jacobians=True)
            return blocks, residual.flatten(1)

        def block_columns(self, column_of) -> tuple[np.ndarray, np.ndarray]:
            """Column in A of each block entry [M, 10] and whether it is a variable (not held constant)."""
            frame = self.frame_index.cpu().numpy()
            obs_focal = self._obs_focal.cpu().numpy()
            point = self.point_index.cpu().numpy()
            pose_start = np.array([column_of(pose) if i > 0 else -1 for i, pose in enumerate(self.poses)])
            columns = np.empty((len(frame), POSE_DOF + 1 + POINT_DOF), dtype=np.int64)
            columns[:, :POSE_DOF] = pose_start[frame, None] + np.arange(POSE_DOF)
            focal_start = np.array([column_of(f) if self.refine_focal else -1 for f in self.focals])
            columns[:, POSE_DOF] = focal_start[obs_focal]
            columns[:, POSE_DOF + 1 :] = column_of(self.points) + POINT_DOF * point[:, None] + np.arange(POINT_DOF)
            valid = np.ones_like(columns, dtype=bool)
            valid[:, :POSE_DOF] = frame[:, None] > 0
            valid[:, POSE_DOF] = self.refine_focal
            return columns, valid

        def jacobians(self) -> tuple[list[torch.Tensor], torch.Tensor]:
            residual, blocks = self._evaluate(with_jacobians=True)
            batch, num_obs = residual.shape[:2]
            pose_blocks, focal_blocks = blocks[..., :POSE_DOF], blocks[..., POSE_DOF : POSE_DOF + 1]
            jacobians = []
            for i in range(1, len(self.poses)):
                jacobians.append((pose_blocks * (self.frame_index == i)[:, None, None]).flatten(1, 2))
            if self.refine_focal:
                for k in range(len(self.focals)):
                    jacobians.append((focal_blocks * (self._obs_focal == k)[:, None, None]).flatten(1, 2))
            num_points = self.points.tensor.shape[1] // POINT_DOF
            point_jacobian = blocks.new_zeros(batch, num_obs, 2, num_points, POINT_DOF)
            point_jacobian[:, torch.arange(num_obs), :, self.point_index] = blocks[..., POSE_DOF + 1 :].transpose(0, 1)
            jacobians.append(point_jacobian.flatten(3).flatten(1, 2))
            return jacobians, residual.flatten(1)

        def dim(self) -> int:
            return 2 * self.frame_index.numel()

        def _copy_impl(self, new_name: str | None = None) -> ReprojectionCost:
            return ReprojectionCost(
                [pose.copy() for pose in self.poses],
                [focal.copy() for focal in self.focals],
                self.points.copy(),
                self.observations.copy(),
                self.weights.copy(),
                self.principal_points.copy(),
                self.aspects.copy(),
                self.log_radius.copy(),
                self.frame_index,
                self.point_index,
                self.frame_focal,
                loss_cls=type(self.loss) if self.loss is not None else None,
                refine_focal=self.refine_focal,
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

    return {
        "CauchyLoss": CauchyLoss,
        "ReprojectionCost": ReprojectionCost,
        "ScaleGaugeCost": ScaleGaugeCost,
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
    """Pick "sparse" (CHOLMOD, on the CPU) or "dense" (torch Cholesky on `device`): dense on CUDA while small."""
    if solver != "auto":
        return solver
    if device.type == "cpu" or num_rows * num_cols * batch * 8 > DENSE_JACOBIAN_MAX_BYTES:
        return "sparse"
    return "dense"


@dataclass
class BundleProblem:
    """The Theseus objective `bundle_adjust` optimises and its variables.

    poses: S th.SE3 (camera 0 held constant). focals: one th.Vector [B, 1] (shared) or one per frame, frame i uses
    focals[frame_focal[i]]. points: th.Vector [B, 3 P] of the P points seen at least twice, original indices
    adjustable_ids [P].
    """

    objective: Any
    poses: list
    focals: list
    frame_focal: torch.Tensor
    points: Any
    adjustable_ids: torch.Tensor


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
) -> BundleProblem:
    """Theseus objective of a checked, batched float64 problem: extr [B, S, 3, 4], intr [B, S, 3, 3], points
    [B, N, 3], obs [B, S, N, 2], obs_mask [B, S, N]. One ReprojectionCost for all observations plus the scale
    gauge."""
    th = import_theseus()
    classes = _theseus_classes()
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

    # Variables.
    poses = [th.SE3(tensor=extr[:, i], name=f"pose_{i}", disable_checks=True) for i in range(frames)]
    fx, fy = intr[..., 0, 0], intr[..., 1, 1]
    if shared_focal:
        focals = [th.Vector(tensor=fx.mean(dim=1, keepdim=True), name="focal")]
        frame_focal = torch.zeros(frames, dtype=torch.long, device=device)
    else:
        focals = [th.Vector(tensor=fx[:, i : i + 1], name=f"focal_{i}") for i in range(frames)]
        frame_focal = torch.arange(frames, device=device)
    point_var = th.Vector(tensor=points[:, adjustable_ids].reshape(batch, -1), name="points")
    loss_cls = {"cauchy": classes["CauchyLoss"], "huber": th.HuberLoss}.get(loss)
    log_radius = torch.full((1, 1), 2 * math.log(loss_scale), dtype=torch.float64, device=device)
    cost = classes["ReprojectionCost"](
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
    )
    objective = th.Objective(dtype=torch.float64)
    objective.add(cost)
    _add_scale_gauge(th, objective, poses, extr)
    objective.to(device)
    return BundleProblem(objective, poses, focals, frame_focal, point_var, adjustable_ids)


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
        linear_solver: "sparse" (CHOLMOD; CUDA tensors are solved on the CPU), "dense" (torch Cholesky on the
            inputs' device, for small problems) or "auto" (sparse on CPU, dense on CUDA while A is small).

    Returns:
        BundleAdjustmentResult with the same array kind, device and float dtype as `extrinsics`.
    """
    th = import_theseus()
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

    problem = build_objective(extr, intr, points, obs, obs_mask, loss, loss_scale, shared_focal, refine_focal)
    poses, focals, frame_focal = problem.poses, problem.focals, problem.frame_focal
    point_var, adjustable_ids = problem.points, problem.adjustable_ids
    objective = problem.objective

    num_cols = POSE_DOF * (frames - 1) + POINT_DOF * len(adjustable_ids) + (len(focals) if refine_focal else 0)
    backend = {"sparse": "cholmod", "dense": "dense"}[
        _choose_solver(linear_solver, out_device, objective.dim(), num_cols, batch)
    ]
    linear = theseus_linear_classes()
    # One cost function for all observations: Theseus' cost vectorization has nothing to group.
    optimizer = linear["LevenbergMarquardt"](
        objective,
        linear_solver_cls=linear["DampedSolver"],
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
        optimizer_kwargs["backward_num_iterations"] = min(5, max_iterations)
    _, info = layer.forward(optimizer_kwargs=optimizer_kwargs)

    # Variables one problem of a batch does not constrain (a frame it does not observe, a point it sees fewer
    # than twice) keep their initial values there.
    observations_per_frame = obs_mask.sum(dim=2)  # [B, S]
    refined_extr = torch.stack([p.tensor for p in poses], dim=1)
    refined_extr = torch.where((observations_per_frame > 0)[..., None, None], refined_extr, extr)
    refined_points = points.clone()
    constrained = (obs_mask.sum(dim=1) >= 2)[:, adjustable_ids, None]  # [B, P, 1]
    refined_points[:, adjustable_ids] = torch.where(
        constrained, point_var.tensor.view(batch, -1, POINT_DOF), points[:, adjustable_ids]
    )
    refined_fx = torch.cat([f.tensor for f in focals], dim=1)[:, frame_focal]  # [B, S]
    refined_intr = intr.clone()
    refined_intr[..., 0, 0] = refined_fx
    refined_intr[..., 1, 1] = refined_fx * (intr[..., 1, 1] / intr[..., 0, 0])

    pixels, depth = project_points(refined_points[:, None], refined_extr, refined_intr)
    error = torch.linalg.norm(pixels - obs, dim=-1)
    error = torch.where(obs_mask & (depth > 0), error, torch.full_like(error, float("inf")))
    inliers = obs_mask & (error < inlier_threshold)

    # Theseus pads the history with inf after the last iteration; the implicit-gradient step adds no entry.
    history = info.err_history[:, torch.isfinite(info.err_history).all(dim=0)]
    num_iterations = history.shape[1] - 1

    outputs = [refined_extr, refined_intr, refined_points, inliers, error, history]
    outputs = [t if t.dtype == torch.bool else t.to(out_dtype) for t in outputs]
    if unbatched:
        outputs = [t[0] for t in outputs]
    if is_numpy:
        outputs = [t.detach().cpu().numpy() for t in outputs]
    return BundleAdjustmentResult(*outputs, num_iterations=num_iterations)


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
