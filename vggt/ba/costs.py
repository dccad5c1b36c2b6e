"""Theseus cost functions of bundle adjustment: pixel reprojection residuals and the scale gauge.

`ReprojectionCost` holds the residuals `project(K_i, T_i X_j) - track_ij` (pixels) of all observations in one
cost function, evaluated in a few batched tensor operations, each optionally under a robust loss (`CauchyLoss`
or Theseus' HuberLoss); its Jacobian comes as small dense blocks for `vggt.ba.linear.BlockSparseLinearization`.
`ScaleGaugeCost` (added by `add_scale_gauge`) keeps the distance from camera 0 to the farthest camera at its
initial value, which fixes the scale of the world.

This module imports Theseus at its top: `vggt.ba.solver` imports it only once `import_theseus()` has succeeded.
"""

from __future__ import annotations

import numpy as np
import theseus as th
import torch

# Camera-space depth below which a point is clamped when dividing by z.
MIN_DEPTH = 1.0e-6
# Added under the square roots of the robust loss and its derivative (as Theseus' RobustCostFunction does).
ROBUST_EPS = 1.0e-20
# Tangent dimensions of a camera pose (SE(3)) and of a 3D point: the column layout of the Jacobian blocks.
POSE_DOF, POINT_DOF = 6, 3
# Weight of the scale prior, residual `(|C_k - C_0| / d_0 - 1)`; it only fixes a gauge, any stiff value works.
SCALE_GAUGE_WEIGHT = 1.0e3
# Camera centres closer than this fraction of the scene extent count as coincident (no usable scale anchor).
MIN_BASELINE_FRACTION = 1.0e-6


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
        fixed_frames: frozenset[int] = frozenset({0}),
    ):
        dtype = observations.tensor.dtype
        super().__init__(th.ScaleCostWeight(torch.ones(1, 1, dtype=dtype)), name=name)
        self.poses, self.focals, self.points = list(poses), list(focals), points
        self.observations, self.weights = observations, weights
        self.principal_points, self.aspects, self.log_radius = principal_points, aspects, log_radius
        self.frame_index, self.point_index, self.frame_focal = frame_index, point_index, frame_focal
        self.loss = loss_cls() if loss_cls is not None else None
        self.refine_focal = refine_focal
        self.fixed_frames = frozenset(fixed_frames)
        for i, pose in enumerate(self.poses):
            setattr(self, f"pose_{i}", pose)
            (self.register_aux_var if i in self.fixed_frames else self.register_optim_var)(f"pose_{i}")
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
        fixed = self.fixed_frames
        pose_start = np.array([-1 if i in fixed else column_of(pose) for i, pose in enumerate(self.poses)])
        columns = np.empty((len(frame), POSE_DOF + 1 + POINT_DOF), dtype=np.int64)
        columns[:, :POSE_DOF] = pose_start[frame, None] + np.arange(POSE_DOF)
        focal_start = np.array([column_of(f) if self.refine_focal else -1 for f in self.focals])
        columns[:, POSE_DOF] = focal_start[obs_focal]
        columns[:, POSE_DOF + 1 :] = column_of(self.points) + POINT_DOF * point[:, None] + np.arange(POINT_DOF)
        valid = np.ones_like(columns, dtype=bool)
        valid[:, :POSE_DOF] = ~np.isin(frame, sorted(fixed))[:, None]
        valid[:, POSE_DOF] = self.refine_focal
        return columns, valid

    def jacobians(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        residual, blocks = self._evaluate(with_jacobians=True)
        batch, num_obs = residual.shape[:2]
        pose_blocks, focal_blocks = blocks[..., :POSE_DOF], blocks[..., POSE_DOF : POSE_DOF + 1]
        jacobians = []
        for i in (i for i in range(len(self.poses)) if i not in self.fixed_frames):
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
            fixed_frames=self.fixed_frames,
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


def add_scale_gauge(objective, poses, extrinsics: torch.Tensor) -> int | None:
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
    objective.add(ScaleGaugeCost(poses[anchor], poses[0], target, weight, name="scale_gauge"))
    return anchor
