"""The shapes of the synthetic scenes (vggt.data.synthetic): solid-textured materials and ray-castable planes,
boxes and spheres.

Each primitive answers `intersect(origins [N, 3], directions [N, 3])` with the ray parameter of its first hit
(inf where the ray misses) and the surface normals [N, 3], and `distance(points [N, 3])` with the distance of
points to its surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHECKER_CONTRAST = 0.45  # dark cells have (1 - this) of the bright cells' albedo
NOISE_CONTRAST = 0.45
NOISE_OCTAVES = 2
NO_HIT = np.inf
HASH_PRIMES = (73856093, 19349663, 83492791)


@dataclass
class Material:
    """Solid texture: albedo = colour * mix(checker, noise)."""

    colour: np.ndarray  # [3] in [0, 1]
    checker_size: float
    noise_frequency: float
    noise_seed: int

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] surface points -> [N, 3] colours in [0, 1]."""
        cells = np.floor(points / self.checker_size).astype(np.int64).sum(axis=-1)
        checker = 1.0 - CHECKER_CONTRAST * (cells % 2)
        noise = 1.0 - NOISE_CONTRAST * fractal_noise(points * self.noise_frequency, self.noise_seed)
        return np.clip(self.colour * (checker * noise)[:, None], 0.0, 1.0)


@dataclass
class Plane:
    """A rectangle: centre + s * axis_u + t * axis_v with |s| <= half_u, |t| <= half_v (two-sided)."""

    centre: np.ndarray
    axis_u: np.ndarray  # unit
    axis_v: np.ndarray  # unit, orthogonal to axis_u
    half_u: float
    half_v: float
    material: Material

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.axis_u, self.axis_v)

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        normal = self.normal
        denom = directions @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((self.centre - origins) @ normal) / denom
        hit = origins + t[:, None] * directions
        local = hit - self.centre
        inside = (np.abs(local @ self.axis_u) <= self.half_u) & (np.abs(local @ self.axis_v) <= self.half_v)
        t = np.where(inside & (t > 0) & np.isfinite(t), t, NO_HIT)
        return t, np.broadcast_to(normal, directions.shape)

    def distance(self, points: np.ndarray) -> np.ndarray:
        local = points - self.centre
        u = np.clip(local @ self.axis_u, -self.half_u, self.half_u)
        v = np.clip(local @ self.axis_v, -self.half_v, self.half_v)
        return np.linalg.norm(local - u[:, None] * self.axis_u - v[:, None] * self.axis_v, axis=-1)


@dataclass
class Box:
    """A box with half sizes `half_size`, turned by `yaw` radians about the world z axis."""

    centre: np.ndarray
    half_size: np.ndarray
    yaw: float
    material: Material

    @property
    def world_from_box(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.full(len(directions), NO_HIT)
        normals = np.zeros_like(directions)
        # Only rays that pass the bounding sphere can hit the box.
        near = ray_sphere_near(origins, directions, self.centre, float(np.linalg.norm(self.half_size)))
        candidates = np.flatnonzero(np.isfinite(near))
        rotation = self.world_from_box
        local_origins = (origins[candidates] - self.centre) @ rotation
        local_dirs = directions[candidates] @ rotation
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-self.half_size - local_origins) / local_dirs
            t2 = (self.half_size - local_origins) / local_dirs
        t_near_axes = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
        t_far = np.nan_to_num(np.maximum(t1, t2), nan=np.inf).min(axis=-1)
        t_near = t_near_axes.max(axis=-1)
        hit = (t_near <= t_far) & (t_near > 0)
        axis = t_near_axes.argmax(axis=-1)
        local_normals = np.zeros_like(local_dirs)
        rows = np.arange(len(axis))
        local_normals[rows, axis] = -np.sign(local_dirs[rows, axis])
        t[candidates] = np.where(hit, t_near, NO_HIT)
        normals[candidates] = local_normals @ rotation.T
        return t, normals

    def distance(self, points: np.ndarray) -> np.ndarray:
        local = np.abs((points - self.centre) @ self.world_from_box) - self.half_size
        outside = np.linalg.norm(np.maximum(local, 0.0), axis=-1)
        inside = np.minimum(local.max(axis=-1), 0.0)
        return np.abs(outside + inside)


@dataclass
class Sphere:
    centre: np.ndarray
    radius: float
    material: Material

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = ray_sphere_near(origins, directions, self.centre, self.radius)
        hit = origins + np.where(np.isfinite(t), t, 0.0)[:, None] * directions
        return t, (hit - self.centre) / self.radius

    def distance(self, points: np.ndarray) -> np.ndarray:
        return np.abs(np.linalg.norm(points - self.centre, axis=-1) - self.radius)


Primitive = Plane | Box | Sphere


def ray_sphere_near(origins: np.ndarray, directions: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """[N] ray parameter of the first sphere crossing in front of the origin (inf where the ray misses)."""
    offset = origins - centre
    a = np.einsum("nc,nc->n", directions, directions)
    b = 2.0 * np.einsum("nc,nc->n", offset, directions)
    c = np.einsum("nc,nc->n", offset, offset) - radius**2
    disc = b * b - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    near, far = (-b - root) / (2 * a), (-b + root) / (2 * a)
    # From inside the sphere (only ever the case for bounding spheres) the far crossing is the first one ahead.
    first = np.where(near > 0, near, far)
    return np.where((disc >= 0) & (first > 0), first, NO_HIT)


def fractal_noise(points: np.ndarray, seed: int) -> np.ndarray:
    """Value noise in [0, 1] at [N, 3] points (lattice spacing 1), summed over NOISE_OCTAVES octaves."""
    total, weight_sum = np.zeros(len(points)), 0.0
    for octave in range(NOISE_OCTAVES):
        scale, weight = 2.0**octave, 0.5**octave
        total += weight * value_noise(points * scale, seed + octave)
        weight_sum += weight
    return total / weight_sum


def value_noise(points: np.ndarray, seed: int) -> np.ndarray:
    base = np.floor(points)
    frac = points - base
    smooth = frac * frac * (3.0 - 2.0 * frac)
    cell = base.astype(np.int64)
    result = np.zeros(len(points))
    for corner in np.ndindex(2, 2, 2):
        offset = np.array(corner)
        weight = np.prod(np.where(offset == 1, smooth, 1.0 - smooth), axis=-1)
        result += weight * lattice_value(cell + offset, seed)
    return result


def lattice_value(cells: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random value in [0, 1) per integer lattice point (an integer hash)."""
    h = np.full(len(cells), (seed * 2654435761) % 2**64, dtype=np.uint64)
    for axis, prime in enumerate(HASH_PRIMES):
        h ^= cells[:, axis].astype(np.uint64) * np.uint64(prime)
        h = (h ^ (h >> np.uint64(13))) * np.uint64(0x5BD1E995)
    h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)
