"""Synthetic scenes with exact depth and cameras: textured planes, boxes and spheres, ray cast in numpy.

The world is z-up: a floor square at z = 0, a wall behind the objects, boxes and spheres resting on the floor.
Cameras sit on an arc around the centre and look at it. Textures are solid (a function of the 3D surface
point: a checkerboard times value noise), so a surface point has the same colour in every view and
correspondences are learnable. Shading is Lambertian, i.e. view independent. Pixels that see no surface
(sky) get depth 0.

    scene = generate_scene(num_frames=8, height=56, width=70, seed=0)
    write_synthetic_dataset("data/synthetic", num_scenes=4)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt.data.scene import Scene, write_scene

# Layout sizes (metres).
FLOOR_HALF_SIZE = 3.0
WALL_DISTANCE = 3.0
WALL_HALF_WIDTH = 4.0
WALL_HEIGHT = 3.0
OBJECT_AREA_RADIUS = 1.3
BOX_HALF_SIZE_RANGE = (0.2, 0.55)
SPHERE_RADIUS_RANGE = (0.2, 0.5)
NUM_BOXES_RANGE = (2, 3)
NUM_SPHERES_RANGE = (1, 2)
# Cameras.
CAMERA_DISTANCE_RANGE = (3.2, 4.2)
CAMERA_HEIGHT_RANGE = (0.8, 1.8)
ARC_DEGREES_RANGE = (30.0, 90.0)
HORIZONTAL_FOV_DEGREES_RANGE = (50.0, 70.0)
LOOK_AT_HEIGHT = 0.4
LOOK_AT_JITTER = 0.15
ARC_START_JITTER = 0.3  # radians
AZIMUTH_JITTER = 0.125  # per-frame azimuth noise, as a fraction of the spacing between frames
# Textures and light.
ALBEDO_RANGE = (0.25, 1.0)
CHECKER_CONTRAST = 0.45  # dark cells have (1 - this) of the bright cells' albedo
NOISE_CONTRAST = 0.45
LIGHT_HEIGHT = 1.5  # z of the light direction before normalisation: light from above, from a random side
CHECKER_SIZE_RANGE = (0.12, 0.35)
NOISE_FREQUENCY_RANGE = (3.0, 9.0)
NOISE_OCTAVES = 2
AMBIENT_LIGHT = 0.35
SKY_TOP_COLOUR = np.array([0.55, 0.7, 0.95])
SKY_HORIZON_COLOUR = np.array([0.9, 0.92, 0.95])
_NO_HIT = np.inf
RAYS_PER_CHUNK = 1 << 20  # bounds the temporaries of one chunk to a few hundred MB
_HASH_PRIMES = (73856093, 19349663, 83492791)


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
        t = np.where(inside & (t > 0) & np.isfinite(t), t, _NO_HIT)
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
        t = np.full(len(directions), _NO_HIT)
        normals = np.zeros_like(directions)
        # Only rays that pass the bounding sphere can hit the box.
        near = _ray_sphere_near(origins, directions, self.centre, float(np.linalg.norm(self.half_size)))
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
        t[candidates] = np.where(hit, t_near, _NO_HIT)
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
        t = _ray_sphere_near(origins, directions, self.centre, self.radius)
        hit = origins + np.where(np.isfinite(t), t, 0.0)[:, None] * directions
        return t, (hit - self.centre) / self.radius

    def distance(self, points: np.ndarray) -> np.ndarray:
        return np.abs(np.linalg.norm(points - self.centre, axis=-1) - self.radius)


Primitive = Plane | Box | Sphere


def _ray_sphere_near(origins: np.ndarray, directions: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
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
    return np.where((disc >= 0) & (first > 0), first, _NO_HIT)


@dataclass
class SceneLayout:
    """The geometry of a synthetic scene, independent of the cameras."""

    primitives: list[Primitive]
    light_direction: np.ndarray  # unit vector towards the light
    front_azimuth: float  # radians: cameras look from this side, the wall stands opposite

    def surface_distance(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] world points -> [...] distance to the nearest surface."""
        flat = points.reshape(-1, 3)
        return np.min([p.distance(flat) for p in self.primitives], axis=0).reshape(points.shape[:-1])


def fractal_noise(points: np.ndarray, seed: int) -> np.ndarray:
    """Value noise in [0, 1] at [N, 3] points (lattice spacing 1), summed over NOISE_OCTAVES octaves."""
    total, weight_sum = np.zeros(len(points)), 0.0
    for octave in range(NOISE_OCTAVES):
        scale, weight = 2.0**octave, 0.5**octave
        total += weight * _value_noise(points * scale, seed + octave)
        weight_sum += weight
    return total / weight_sum


def _value_noise(points: np.ndarray, seed: int) -> np.ndarray:
    base = np.floor(points)
    frac = points - base
    smooth = frac * frac * (3.0 - 2.0 * frac)
    cell = base.astype(np.int64)
    result = np.zeros(len(points))
    for corner in np.ndindex(2, 2, 2):
        offset = np.array(corner)
        weight = np.prod(np.where(offset == 1, smooth, 1.0 - smooth), axis=-1)
        result += weight * _lattice_value(cell + offset, seed)
    return result


def _lattice_value(cells: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random value in [0, 1) per integer lattice point (an integer hash)."""
    h = np.full(len(cells), (seed * 2654435761) % 2**64, dtype=np.uint64)
    for axis, prime in enumerate(_HASH_PRIMES):
        h ^= cells[:, axis].astype(np.uint64) * np.uint64(prime)
        h = (h ^ (h >> np.uint64(13))) * np.uint64(0x5BD1E995)
    h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)


def _random_material(rng: np.random.Generator) -> Material:
    return Material(
        colour=rng.uniform(*ALBEDO_RANGE, size=3),
        checker_size=float(rng.uniform(*CHECKER_SIZE_RANGE)),
        noise_frequency=float(rng.uniform(*NOISE_FREQUENCY_RANGE)),
        noise_seed=int(rng.integers(0, 2**31)),
    )


def _horizontal(azimuth: float) -> np.ndarray:
    return np.array([np.cos(azimuth), np.sin(azimuth), 0.0])


def sample_layout(rng: np.random.Generator) -> SceneLayout:
    """A random arrangement of a floor, a wall, boxes and spheres."""
    front = float(rng.uniform(0.0, 2 * np.pi))
    z_axis = np.array([0.0, 0.0, 1.0])
    x_axis, y_axis = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    floor = Plane(np.zeros(3), x_axis, y_axis, FLOOR_HALF_SIZE, FLOOR_HALF_SIZE, _random_material(rng))
    wall_centre = -WALL_DISTANCE * _horizontal(front) + z_axis * WALL_HEIGHT / 2
    wall_axis = _horizontal(front + np.pi / 2)
    wall = Plane(wall_centre, wall_axis, z_axis, WALL_HALF_WIDTH, WALL_HEIGHT / 2, _random_material(rng))
    primitives: list[Primitive] = [floor, wall]
    for _ in range(int(rng.integers(NUM_BOXES_RANGE[0], NUM_BOXES_RANGE[1] + 1))):
        half = rng.uniform(*BOX_HALF_SIZE_RANGE, size=3)
        centre = np.append(rng.uniform(-OBJECT_AREA_RADIUS, OBJECT_AREA_RADIUS, size=2), half[2])
        primitives.append(Box(centre, half, float(rng.uniform(0, np.pi)), _random_material(rng)))
    for _ in range(int(rng.integers(NUM_SPHERES_RANGE[0], NUM_SPHERES_RANGE[1] + 1))):
        radius = float(rng.uniform(*SPHERE_RADIUS_RANGE))
        centre = np.append(rng.uniform(-OBJECT_AREA_RADIUS, OBJECT_AREA_RADIUS, size=2), radius)
        primitives.append(Sphere(centre, radius, _random_material(rng)))
    light = np.append(rng.normal(size=2), LIGHT_HEIGHT)
    return SceneLayout(primitives, light / np.linalg.norm(light), front)


def look_at_extrinsic(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[3, 4] OpenCV camera-from-world for a camera at `position` looking at `target`, world z up."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, -rotation @ position[:, None]], axis=1)


def sample_cameras(
    rng: np.random.Generator, num_frames: int, height: int, width: int, front_azimuth: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cameras on an arc around the scene centre: intrinsics [S, 3, 3] and extrinsics [S, 3, 4].

    The principal point is the image centre (W/2, H/2), the convention of VGGT's camera encoding.
    """
    arc = np.deg2rad(rng.uniform(*ARC_DEGREES_RANGE))
    start = front_azimuth - arc / 2 + rng.uniform(-ARC_START_JITTER, ARC_START_JITTER)
    azimuths = start + arc * (np.arange(num_frames) / max(num_frames - 1, 1))
    azimuths = azimuths + rng.normal(scale=AZIMUTH_JITTER * arc / max(num_frames, 1), size=num_frames)
    distances = rng.uniform(*CAMERA_DISTANCE_RANGE, size=num_frames)
    heights = rng.uniform(*CAMERA_HEIGHT_RANGE, size=num_frames)
    fov = np.deg2rad(rng.uniform(*HORIZONTAL_FOV_DEGREES_RANGE))
    focal = (width / 2) / np.tan(fov / 2)
    intrinsic = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    extrinsics = []
    for azimuth, distance, z in zip(azimuths, distances, heights):
        position = distance * _horizontal(azimuth) + np.array([0.0, 0.0, z])
        target = np.array([0.0, 0.0, LOOK_AT_HEIGHT]) + rng.uniform(-LOOK_AT_JITTER, LOOK_AT_JITTER, size=3)
        extrinsics.append(look_at_extrinsic(position, target))
    return np.repeat(intrinsic[None], num_frames, axis=0), np.stack(extrinsics)


def render(
    layout: SceneLayout, intrinsics: np.ndarray, extrinsics: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ray cast the layout: images [S, H, W, 3] uint8 and depths [S, H, W] float32 (z in metres, 0 = sky)."""
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    pixels = np.stack([cols.ravel(), rows.ravel(), np.ones(height * width)], axis=-1)
    # Rays with camera-space z = 1, so the ray parameter t is the z-depth.
    rotations = extrinsics[:, :, :3]
    world_from_pixel = np.linalg.inv(intrinsics).transpose(0, 2, 1) @ rotations  # [S, 3, 3], for row vectors
    directions = (pixels[None] @ world_from_pixel).reshape(-1, 3)
    centres = -np.einsum("sji,sj->si", rotations, extrinsics[:, :, 3])
    origins = np.repeat(centres, height * width, axis=0)
    colours, depths = np.zeros((len(directions), 3)), np.zeros(len(directions))
    for start in range(0, len(directions), RAYS_PER_CHUNK):
        chunk = slice(start, start + RAYS_PER_CHUNK)
        colours[chunk], depths[chunk] = _cast_rays(layout, origins[chunk], directions[chunk])
    images = np.round(colours * 255).astype(np.uint8).reshape(len(extrinsics), height, width, 3)
    return images, depths.astype(np.float32).reshape(len(extrinsics), height, width)


def _cast_rays(layout: SceneLayout, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3] rays -> colours [N, 3] in [0, 1] and ray parameters [N] (0 where the ray hits nothing)."""
    best_t = np.full(len(directions), _NO_HIT)
    best_normals = np.zeros_like(directions)
    owner = np.full(len(directions), -1)
    for index, primitive in enumerate(layout.primitives):
        t, normals = primitive.intersect(origins, directions)
        closer = t < best_t
        best_t[closer], best_normals[closer], owner[closer] = t[closer], normals[closer], index
    colours = np.zeros_like(directions)
    for index, primitive in enumerate(layout.primitives):
        seen = owner == index
        points = origins[seen] + best_t[seen, None] * directions[seen]
        normal = best_normals[seen]
        normal = np.where((np.einsum("nc,nc->n", normal, directions[seen]) > 0)[:, None], -normal, normal)
        light = AMBIENT_LIGHT + (1 - AMBIENT_LIGHT) * np.clip(normal @ layout.light_direction, 0.0, 1.0)
        colours[seen] = primitive.material.albedo(points) * light[:, None]
    sky = owner < 0
    elevation = np.clip(directions[sky, 2] / np.linalg.norm(directions[sky], axis=-1), 0.0, 1.0)[:, None]
    colours[sky] = SKY_HORIZON_COLOUR + (SKY_TOP_COLOUR - SKY_HORIZON_COLOUR) * elevation
    return colours, np.where(sky, 0.0, best_t)


def generate_scene(
    num_frames: int = 8,
    height: int = 56,
    width: int = 70,
    seed: int = 0,
    layout: SceneLayout | None = None,
    name: str | None = None,
) -> Scene:
    """A rendered synthetic scene: images, exact depth, intrinsics and extrinsics for `num_frames` views.

    `seed` draws the layout (unless `layout` is given) and the cameras.
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"need at least one frame of at least 1x1 pixels, got {num_frames} x {height}x{width}")
    rng = np.random.default_rng(seed)
    if layout is None:
        layout = sample_layout(rng)
    intrinsics, extrinsics = sample_cameras(rng, num_frames, height, width, layout.front_azimuth)
    images, depths = render(layout, intrinsics, extrinsics, height, width)
    return Scene(
        name=name or f"synthetic_{seed:04d}",
        image_names=[f"frame_{i:04d}.png" for i in range(num_frames)],
        intrinsics=intrinsics,
        extrinsics=extrinsics,
        image_hw=np.tile([height, width], (num_frames, 1)),
        images=images,
        depths=depths,
    )


def write_synthetic_dataset(
    root: Path | str,
    num_scenes: int,
    num_frames: int = 8,
    height: int = 56,
    width: int = 70,
    seed: int = 0,
    depth_format: str = "npy",
    overwrite: bool = False,
) -> list[Path]:
    """Write `num_scenes` synthetic scenes as scene folders `root/scene_0000`, ... and return their paths.

    Scene i uses seed `seed + i`, so the same arguments always write the same dataset.
    """
    root = Path(root)
    paths = []
    for index in range(num_scenes):
        scene = generate_scene(num_frames, height, width, seed=seed + index, name=f"scene_{index:04d}")
        paths.append(write_scene(root / scene.name, scene, depth_format=depth_format, overwrite=overwrite))
    return paths
