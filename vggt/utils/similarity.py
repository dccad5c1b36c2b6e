"""Similarity transforms Sim(3): fitting them to point correspondences, robustly, and applying them.

Conventions:
- a similarity maps points as `X' = s R X + t` (scale s > 0, rotation R [3, 3], translation t [3]); as a matrix
  it is `[[s R, t], [0, 1]]`, and `a @ b` applies `b` first;
- moving the world by a similarity moves OpenCV camera-from-world extrinsics `[R_c | t_c]` to
  `[R_c R^T | s t_c - R_c R^T t]`: the camera sees the moved points at the same pixels, at `s` times the depth;
- the tangent space sim(3) is ordered `xi = (rho, phi, sigma)` [7]: translation part, rotation vector, log-scale,
  so that `exp(xi)` has scale `e^sigma`, rotation `exp([phi]_x)` and translation `W(sigma, phi) rho`.

Everything is numpy float64; array arguments may be torch tensors too (they are read as float64 numpy). The
module does not import torch, so the metrics that use it (`vggt.eval.points`) stay torch-free.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vggt.errors import InputError

MIN_CORRESPONDENCES = 3
# The median of the norm of a standard 3D Gaussian vector (chi distribution, 3 degrees of freedom): dividing the
# median residual by it estimates the per-axis noise sigma of the inliers.
CHI3_MEDIAN = 1.5381722
# Robust-weight thresholds, in units of that sigma: the chi(3) 95 % quantile, so that 95 % of Gaussian inliers
# keep weight 1 (Huber) or at least 1/2 (Cauchy).
HUBER_THRESHOLD = 2.7955
CAUCHY_THRESHOLD = 2.7955
DEFAULT_MAX_ITERATIONS = 50
# IRLS stops when the fitted transform moves the points by less than this fraction of their spread.
DEFAULT_TOLERANCE = 1e-10
# Gauss-Legendre nodes for the integral W(sigma, phi) = int_0^1 e^(sigma u) exp(u [phi]_x) du: the integrand is
# entire, so 24 nodes are exact to rounding for |sigma| + |phi| up to about 8 (scale ratios of e^8).
_QUADRATURE_NODES = 24
# Rotation angles above this take their axis from the symmetric part of the matrix (the antisymmetric part ~ 0).
_NEAR_PI = np.pi - 1e-3

Estimator = Literal["umeyama", "huber", "cauchy"]
ESTIMATORS = ("umeyama", "huber", "cauchy")
# Chosen from benchmarks/alignment.py (docs/long_sequences.md).
DEFAULT_ESTIMATOR: Estimator = "cauchy"


def as_array(values: Any, name: str) -> np.ndarray:
    """`values` (numpy, torch or nested lists) as a float64 numpy array."""
    torch = sys.modules.get("torch")  # only a process that imported torch can hold a tensor
    if torch is not None and isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError("{name} must be a numeric array or tensor: {error}", name=name, error=error) from None


def skew(vectors: np.ndarray) -> np.ndarray:
    """[..., 3] vectors to [..., 3, 3] cross-product matrices `[v]_x` (`[v]_x w = v x w`)."""
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    zero = np.zeros_like(x)
    rows = (zero, -z, y, z, zero, -x, -y, x, zero)
    return np.stack(rows, axis=-1).reshape(vectors.shape[:-1] + (3, 3))


def rotation_exp(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: [..., 3] rotation vectors to [..., 3, 3] matrices."""
    theta = np.linalg.norm(rotvec, axis=-1)[..., None, None]
    cross = skew(rotvec)
    # sin(t) / t and (1 - cos t) / t^2, written with sinc so that they stay exact at t = 0.
    first, second = np.sinc(theta / np.pi), 0.5 * np.sinc(theta / (2 * np.pi)) ** 2
    return np.eye(3) + first * cross + second * cross @ cross


def rotation_log(rotation: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices to [..., 3] rotation vectors (angle in [0, pi])."""
    rotation = np.asarray(rotation, dtype=np.float64)
    antisymmetric = rotation - np.swapaxes(rotation, -1, -2)
    twice_sin_axis = np.stack((antisymmetric[..., 2, 1], antisymmetric[..., 0, 2], antisymmetric[..., 1, 0]), -1)
    cos = (np.trace(rotation, axis1=-2, axis2=-1) - 1) / 2
    sin = np.linalg.norm(twice_sin_axis, axis=-1) / 2
    # atan2 keeps the angle exact near 0 and near pi, where arccos of the trace loses half the digits.
    angle = np.arctan2(sin, cos)
    near_identity = 0.5 / np.sinc(angle / np.pi)  # angle / (2 sin angle), with its limit 1/2 at 0
    small = twice_sin_axis * near_identity[..., None]
    # Near pi, sin is ~0: the axis comes from the symmetric part, cos I + (1 - cos) n n^T.
    outer = (rotation + np.swapaxes(rotation, -1, -2)) / 2 - cos[..., None, None] * np.eye(3)
    column = np.argmax(np.diagonal(outer, axis1=-2, axis2=-1), axis=-1)
    axis = np.take_along_axis(outer, column[..., None, None].repeat(3, -1), axis=-2)[..., 0, :]
    axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-300)
    axis = axis * np.where(np.sum(axis * twice_sin_axis, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    return np.where((angle > _NEAR_PI)[..., None], axis * angle[..., None], small)


def translation_jacobian(log_scale: np.ndarray, rotvec: np.ndarray) -> np.ndarray:
    """W(sigma, phi) [..., 3, 3] with `t = W rho` in `exp(xi)`: the integral of `e^(sigma u) exp(u [phi]_x)`.

    Args:
        log_scale: [...] sigma.
        rotvec: [..., 3] phi.
    """
    nodes, weights = np.polynomial.legendre.leggauss(_QUADRATURE_NODES)
    u = (nodes + 1) / 2  # [Q] on [0, 1]
    theta = np.linalg.norm(rotvec, axis=-1)[..., None]  # [..., 1]
    growth = np.exp(log_scale[..., None] * u) * weights / 2  # [..., Q]
    # u-integrals of e^(sigma u) times 1, sin(theta u) / theta and (1 - cos(theta u)) / theta^2.
    identity_part = growth.sum(-1)
    cross_part = (growth * u * np.sinc(theta * u / np.pi)).sum(-1)
    square_part = (growth * 0.5 * u**2 * np.sinc(theta * u / (2 * np.pi)) ** 2).sum(-1)
    cross = skew(rotvec)
    return (
        identity_part[..., None, None] * np.eye(3)
        + cross_part[..., None, None] * cross
        + square_part[..., None, None] * cross @ cross
    )


def sim3_exp(xi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[..., 7] tangent vectors (rho, phi, sigma) to (scale [...], rotation [..., 3, 3], translation [..., 3])."""
    rho, phi, sigma = xi[..., :3], xi[..., 3:6], xi[..., 6]
    jacobian = translation_jacobian(sigma, phi)
    return np.exp(sigma), rotation_exp(phi), np.einsum("...ij,...j->...i", jacobian, rho)


def sim3_log(scale: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Inverse of `sim3_exp`: scale [...], rotation [..., 3, 3], translation [..., 3] to [..., 7]."""
    sigma, phi = np.log(scale), rotation_log(rotation)
    rho = np.linalg.solve(translation_jacobian(sigma, phi), translation[..., None])[..., 0]
    return np.concatenate((rho, phi, sigma[..., None]), axis=-1)


def compose_arrays(first: tuple, second: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`first @ second` (apply `second`, then `first`) of batched similarities (scale [...], rotation [..., 3, 3],
    translation [..., 3]), broadcasting over the leading dimensions."""
    scale_a, rotation_a, translation_a = first
    scale_b, rotation_b, translation_b = second
    moved = np.einsum("...ij,...j->...i", rotation_a, translation_b)
    return scale_a * scale_b, rotation_a @ rotation_b, np.asarray(scale_a)[..., None] * moved + translation_a


def invert_arrays(scale: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> tuple:
    """Inverses of batched similarities: (1 / s, R^T, -R^T t / s)."""
    rotation_t = np.swapaxes(rotation, -1, -2)
    back = np.einsum("...ij,...j->...i", rotation_t, translation)
    return 1.0 / scale, rotation_t, -back / np.asarray(scale)[..., None]


@dataclass(frozen=True)
class Similarity:
    """One similarity `X' = scale * rotation @ X + translation`: scale float > 0, rotation [3, 3], translation [3]."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "translation", np.asarray(self.translation, dtype=np.float64).reshape(3))
        if not self.scale > 0:
            raise InputError("a similarity needs a positive scale, got {scale}", scale=self.scale)

    @staticmethod
    def identity() -> Similarity:
        return Similarity(1.0, np.eye(3), np.zeros(3))

    @staticmethod
    def from_matrix(matrix: Any) -> Similarity:
        """From a [4, 4] (or [3, 4]) matrix `[[s R, t], [0, 1]]`."""
        matrix = as_array(matrix, "matrix")
        scaled = matrix[:3, :3]
        scale = np.cbrt(np.linalg.det(scaled))
        return Similarity(scale, scaled / scale, matrix[:3, 3])

    @staticmethod
    def from_camera(extrinsic: Any) -> Similarity:
        """The rigid motion taking world points into the frame of the camera with this [3, 4] camera-from-world
        extrinsic; moving the world by it makes that camera's extrinsic the identity."""
        extrinsic = as_array(extrinsic, "extrinsic")
        return Similarity(1.0, extrinsic[:3, :3], extrinsic[:3, 3])

    @staticmethod
    def exp(xi: Any) -> Similarity:
        """From a [7] tangent vector (rho, phi, sigma)."""
        return Similarity(*sim3_exp(as_array(xi, "xi")))

    def log(self) -> np.ndarray:
        """[7] tangent vector (rho, phi, sigma)."""
        return sim3_log(*self.as_arrays())

    @property
    def matrix(self) -> np.ndarray:
        """[4, 4] `[[s R, t], [0, 1]]`."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.scale * self.rotation
        matrix[:3, 3] = self.translation
        return matrix

    def __matmul__(self, other: Similarity) -> Similarity:
        """The composition applying `other` first, then `self`."""
        return Similarity(*compose_arrays(self.as_arrays(), other.as_arrays()))

    def inverse(self) -> Similarity:
        return Similarity(*invert_arrays(*self.as_arrays()))

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scale [], rotation [3, 3], translation [3]), the layout of the batched functions of this module."""
        return np.asarray(self.scale), self.rotation, self.translation

    def apply(self, points: Any) -> np.ndarray:
        """`s R p + t` for points [..., 3] (numpy or torch); returns numpy float64 [..., 3]."""
        return apply_similarity(points, self.scale, self.rotation, self.translation)

    def apply_to_extrinsics(self, extrinsics: Any) -> np.ndarray:
        """Camera-from-world extrinsics [..., 3, 4] (or [..., 4, 4]) of cameras moved with the world: [..., 3, 4].

        From `X = R^T (X' - t) / s`: `s (R_c X + t_c) = R_c R^T X' + (s t_c - R_c R^T t)`, the same ray scaled by s.
        """
        extrinsics = as_array(extrinsics, "extrinsics")
        if extrinsics.shape[-2:] not in ((3, 4), (4, 4)):
            raise InputError("{extrinsics} must have shape [..., 3, 4], got {shape}", shape=list(extrinsics.shape))
        rotation = extrinsics[..., :3, :3] @ self.rotation.T
        translation = self.scale * extrinsics[..., :3, 3] - rotation @ self.translation
        return np.concatenate((rotation, translation[..., None]), axis=-1)


def apply_similarity(points: Any, scale: float, rot: Any, trans: Any) -> np.ndarray:
    """`scale * R @ p + t` for points [..., 3] (numpy or torch); returns numpy float64 [..., 3]."""
    p = as_array(points, "points")
    return scale * p @ as_array(rot, "rot").T + as_array(trans, "trans")


def _check_correspondences(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The [N] weights (ones when None) after checking the shapes and values of the inputs."""
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise InputError(
            "{src} and {dst} must be two [N, 3] arrays of corresponding points, got {src_shape} and {dst_shape}",
            src_shape=list(src.shape),
            dst_shape=list(dst.shape),
        )
    weights = np.ones(len(src)) if weights is None else weights
    if weights.shape != (len(src),) or not np.isfinite(weights).all() or (weights < 0).any():
        raise InputError("{weights} must be [N] finite non-negative values, one per point pair")
    if np.count_nonzero(weights) < MIN_CORRESPONDENCES:
        raise InputError(
            "umeyama needs at least {minimum} correspondences with positive weight, got {count}",
            minimum=MIN_CORRESPONDENCES,
            count=np.count_nonzero(weights),
        )
    return weights


def umeyama(
    src: Any, dst: Any, with_scale: bool = True, weights: Any | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity taking `src` onto `dst` (Umeyama 1991): dst ~ scale * R @ src + t.

    Minimises `sum_i w_i |dst_i - (s R src_i + t)|^2` in closed form.

    Args:
        src: [N, 3] points (numpy or torch).
        dst: [N, 3] corresponding points.
        with_scale: fit the scale (Sim(3)); False fits a rigid SE(3) motion with scale 1.
        weights: optional [N] non-negative weights (e.g. confidences); None weighs all points equally.

    Returns:
        scale, R [3, 3] (det +1), t [3].
    """
    src, dst = as_array(src, "src"), as_array(dst, "dst")
    weights = _check_correspondences(src, dst, None if weights is None else as_array(weights, "weights"))
    weights = weights / weights.sum()
    src_mean, dst_mean = weights @ src, weights @ dst
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = weights @ np.sum(src_c**2, axis=1)
    if src_var <= 0:
        raise InputError("umeyama: the source points are all identical, so no similarity can be fitted")

    cov = (dst_c * weights[:, None]).T @ src_c
    u, singular, vt = np.linalg.svd(cov)
    # Flip the weakest axis if needed so the result is a rotation, not a reflection.
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = (u * sign) @ vt
    scale = float(np.sum(singular * sign) / src_var) if with_scale else 1.0
    trans = dst_mean - scale * rot @ src_mean
    return scale, rot, trans


@dataclass(frozen=True)
class SimilarityFit:
    """A fitted similarity and what the fit made of each point pair.

    similarity: dst ~ similarity.apply(src). weights: [N] final weights (prior times robust weight, in the prior's
    units). residuals: [N] distances |dst - similarity.apply(src)|. noise_scale: the robust per-axis noise estimate
    of the standardised residuals (0 for "umeyama"). iterations: weighted Umeyama solves run.
    """

    similarity: Similarity
    weights: np.ndarray
    residuals: np.ndarray
    noise_scale: float
    iterations: int


def robust_weights(standardised: np.ndarray, estimator: Estimator) -> np.ndarray:
    """IRLS weights psi(u) / u of [N] non-negative standardised residuals u for the Huber or Cauchy loss."""
    if estimator == "huber":
        return np.minimum(1.0, HUBER_THRESHOLD / np.maximum(standardised, 1e-300))
    if estimator == "cauchy":
        return 1.0 / (1.0 + (standardised / CAUCHY_THRESHOLD) ** 2)
    raise InputError("{estimator} must be one of {choices}, got {value!r}", choices=ESTIMATORS, value=estimator)


def fit_similarity(
    src: Any,
    dst: Any,
    weights: Any | None = None,
    estimator: Estimator = DEFAULT_ESTIMATOR,
    with_scale: bool = True,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance: float = DEFAULT_TOLERANCE,
) -> SimilarityFit:
    """Similarity taking `src` onto `dst`, robust to outlier pairs: iteratively reweighted Umeyama.

    "umeyama" is one weighted least-squares solve. "huber" and "cauchy" start from it and re-solve with weights
    `w_i * rho'(u_i) / u_i`, where `u_i = sqrt(w_i) r_i / sigma` is the residual standardised by the prior weight
    and by the robust noise estimate `sigma = median(sqrt(w) r) / CHI3_MEDIAN`, re-estimated every iteration.

    Args:
        src: [N, 3] points (numpy or torch), e.g. a window's unprojected depth of the shared frames.
        dst: [N, 3] corresponding points, e.g. the previous window's points of the same pixels.
        weights: optional [N] prior weights (confidences, read as inverse variances); None: all 1.
        estimator: "umeyama", "huber" or "cauchy".
        with_scale: fit the scale; False keeps it 1.
        max_iterations: IRLS iterations at most.
        tolerance: stop once an iteration moves the fitted points by less than this times their spread.

    Returns:
        SimilarityFit (similarity dst-from-src, final weights, residuals, noise scale, iterations).
    """
    if estimator not in ESTIMATORS:
        raise InputError("{estimator} must be one of {choices}, got {value!r}", choices=ESTIMATORS, value=estimator)
    src, dst = as_array(src, "src"), as_array(dst, "dst")
    prior = _check_correspondences(src, dst, None if weights is None else as_array(weights, "weights"))
    current = prior
    similarity = Similarity(*umeyama(src, dst, with_scale, current))
    residuals = np.linalg.norm(dst - similarity.apply(src), axis=1)
    spread = np.sqrt(np.mean(np.sum((src - src.mean(axis=0)) ** 2, axis=1)))
    noise_scale, iterations = 0.0, 1
    while estimator != "umeyama" and iterations <= max_iterations:
        standardised = np.sqrt(prior) * residuals
        noise_scale = float(np.median(standardised[prior > 0]) / CHI3_MEDIAN)
        if noise_scale <= 0:  # more than half the pairs fit exactly: nothing left to reweight
            break
        current = prior * robust_weights(standardised / noise_scale, estimator)
        updated = Similarity(*umeyama(src, dst, with_scale, current))
        change = np.sqrt(np.mean(np.sum((updated.apply(src) - similarity.apply(src)) ** 2, axis=1)))
        similarity, iterations = updated, iterations + 1
        residuals = np.linalg.norm(dst - similarity.apply(src), axis=1)
        if change <= tolerance * similarity.scale * spread:
            break
    return SimilarityFit(similarity, current, residuals, noise_scale, iterations)
