"""Inputs of `bundle_adjust`: option and shape checks, numpy / torch conversion, batching, float64 and masking.

`prepare_inputs` turns the caller's arrays into one batched float64 problem (`PreparedInputs`) and remembers
their kind, so that `PreparedInputs.restore` gives the results back as the caller passed them. Nothing here
needs Theseus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LOSSES = ("cauchy", "huber", None)
BACKWARD_MODES = ("implicit", "unroll", "truncated")
LINEAR_SOLVERS = ("auto", "sparse", "dense")
INPUT_NAMES = ("extrinsics", "intrinsics", "points3d", "tracks", "mask")


@dataclass
class PreparedInputs:
    """One checked, batched float64 problem on one device, and how to hand results back.

    extrinsics [B, S, 3, 4] camera-from-world, intrinsics [B, S, 3, 3], points3d [B, N, 3], tracks [B, S, N, 2]
    (zero where not observed), mask [B, S, N] bool (observed, and inside the image when its size was given).
    device / dtype: those of the caller's `extrinsics` (float64 for integer numpy input); is_numpy: the caller
    passed numpy arrays; unbatched: the caller left out the batch dimension.
    """

    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    points3d: torch.Tensor
    tracks: torch.Tensor
    mask: torch.Tensor
    device: torch.device
    dtype: torch.dtype
    is_numpy: bool
    unbatched: bool

    def restore(self, tensors: list[torch.Tensor]) -> list:
        """Tensors [B, ...] in the caller's kind: float ones in its dtype, batch dim dropped if it had none."""
        tensors = [t if t.dtype == torch.bool else t.to(self.dtype) for t in tensors]
        if self.unbatched:
            tensors = [t[0] for t in tensors]
        if self.is_numpy:
            return [t.detach().cpu().numpy() for t in tensors]
        return tensors


def check_options(
    loss: str | None, backward_mode: str, linear_solver: str, loss_scale: float, max_iterations: int
) -> None:
    """Raise a ValueError naming the first of `bundle_adjust`'s solver options that is out of range."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if backward_mode not in BACKWARD_MODES:
        raise ValueError(f"backward_mode must be one of {BACKWARD_MODES}, got {backward_mode!r}")
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {linear_solver!r}")
    if not loss_scale > 0 or max_iterations < 1:
        raise ValueError(f"loss_scale must be > 0 and max_iterations >= 1, got {loss_scale} and {max_iterations}")


def prepare_inputs(
    extrinsics, intrinsics, points3d, tracks, mask, image_size: tuple[int, int] | None = None
) -> PreparedInputs:
    """Check and convert `bundle_adjust`'s arrays (numpy or torch, with or without the batch dimension).

    Args:
        extrinsics: [B?, S, 3, 4]; intrinsics: [B?, S, 3, 3]; points3d: [B?, N, 3]; tracks: [B?, S, N, 2];
            mask: [B?, S, N].
        image_size: (height, width); when given, observations outside the image are masked out.
    """
    is_numpy = isinstance(extrinsics, np.ndarray)
    device = extrinsics.device if isinstance(extrinsics, torch.Tensor) else torch.device("cpu")
    dtype = extrinsics.dtype if isinstance(extrinsics, torch.Tensor) else torch.from_numpy(extrinsics[:0]).dtype
    if not dtype.is_floating_point:
        dtype = torch.float64
    arrays = (extrinsics, intrinsics, points3d, tracks, mask)
    tensors = [_as_tensor(name, array, device) for name, array in zip(INPUT_NAMES, arrays)]
    unbatched = tensors[0].ndim == 3
    if unbatched:
        tensors = [t[None] for t in tensors]
    if any(t.device != device for t in tensors):
        raise ValueError(f"all inputs must be on one device, got {[str(t.device) for t in tensors]}")
    # Theseus works in float64 here: pixel residuals on scenes of a few units need the precision.
    extr, intr, points, obs = (t.to(torch.float64) for t in tensors[:4])
    obs_mask = tensors[4].to(torch.bool)
    _check_inputs(extr, intr, points, obs, obs_mask)
    if image_size is not None:
        height, width = image_size
        inside = (obs[..., 0] >= -0.5) & (obs[..., 0] <= width - 0.5)
        inside &= (obs[..., 1] >= -0.5) & (obs[..., 1] <= height - 0.5)
        obs_mask = obs_mask & inside
    obs = torch.where(obs_mask[..., None], obs, torch.zeros_like(obs))
    return PreparedInputs(extr, intr, points, obs, obs_mask, device, dtype, is_numpy, unbatched)


def _as_tensor(name: str, array, device=None) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array).to(device=device)
    if isinstance(array, torch.Tensor):
        return array
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")


def _check_inputs(extrinsics, intrinsics, points3d, tracks, mask) -> None:
    """Validate batched shapes [B, S, 3, 4], [B, S, 3, 3], [B, N, 3], [B, S, N, 2], [B, S, N] and values."""
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
