"""Synthetic scenes with exact depth and cameras: textured planes, boxes and spheres, ray cast in numpy.

The world is z-up: a floor square at z = 0, a wall behind the objects, boxes and spheres resting on the floor.
Cameras sit on an arc around the centre and look at it. Textures are solid (a function of the 3D surface
point: a checkerboard times value noise), so a surface point has the same colour in every view and
correspondences are learnable. Shading is Lambertian, i.e. view independent. Pixels that see no surface
(sky) get depth 0.

    scene = generate_scene(num_frames=8, height=56, width=70, seed=0)
    write_synthetic_dataset("data/synthetic", num_scenes=4)

From the command line (also `vggt synthesize`), held-out scenes for a synthetic training config: drawn as its
training samples are (frames, image size, layouts and cameras), from a seed it does not train on, with ground-truth
tracks:

    python -m vggt.data.synthetic --out data/heldout --num-scenes 32 --seed 1 --like configs/synthetic_small.yaml
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt.data.scene import Scene, write_scene
from vggt.data.synthetic_shapes import NO_HIT, Box, Material, Plane, Primitive, Sphere
from vggt.data.tracks import SceneTracks
from vggt.errors import DependencyError, InputError
from vggt.utils.commands import run_main

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
LIGHT_HEIGHT = 1.5  # z of the light direction before normalisation: light from above, from a random side
CHECKER_SIZE_RANGE = (0.12, 0.35)
NOISE_FREQUENCY_RANGE = (3.0, 9.0)
AMBIENT_LIGHT = 0.35
SKY_TOP_COLOUR = np.array([0.55, 0.7, 0.95])
SKY_HORIZON_COLOUR = np.array([0.9, 0.92, 0.95])
RAYS_PER_CHUNK = 1 << 20  # bounds the temporaries of one chunk to a few hundred MB
# Ground-truth tracks: query pixels are drawn QUERY_OVERSAMPLING times over (some see the sky), at most
# MAX_QUERY_DRAWS times; a point is hidden in a view whose ray meets a surface more than this fraction of its
# depth in front of it (float64 ray casts agree to about 1e-12).
QUERY_OVERSAMPLING = 2
MAX_QUERY_DRAWS = 20
VISIBILITY_DEPTH_TOLERANCE = 1e-6
# The command line's defaults without --like.
DEFAULT_FRAMES = 8
DEFAULT_HW = (56, 70)
DEFAULT_TRACKS = 64
SYNTHESIZE_DESCRIPTION = "Write synthetic scene folders (exact cameras, depth and tracks) for evaluation or tests"
MIN_TRACK_DEPTH = 1e-6  # metres: points closer to (or behind) a camera's plane are not seen by it


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


def _first_hits(
    layout: SceneLayout, origins: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[N, 3] rays -> ray parameters [N] of the first hit (inf: none), normals [N, 3], primitive index [N] (-1)."""
    best_t = np.full(len(directions), NO_HIT)
    best_normals = np.zeros_like(directions)
    owner = np.full(len(directions), -1)
    for index, primitive in enumerate(layout.primitives):
        t, normals = primitive.intersect(origins, directions)
        closer = t < best_t
        best_t[closer], best_normals[closer], owner[closer] = t[closer], normals[closer], index
    return best_t, best_normals, owner


def _cast_rays(layout: SceneLayout, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3] rays -> colours [N, 3] in [0, 1] and ray parameters [N] (0 where the ray hits nothing)."""
    best_t, best_normals, owner = _first_hits(layout, origins, directions)
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


def _pixel_rays(intrinsic: np.ndarray, extrinsic: np.ndarray, pixels_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays through [N, 2] pixels of one camera: origins [N, 3] and directions [N, 3] of camera-space z = 1."""
    rotation = extrinsic[:, :3]
    homogeneous = np.concatenate([pixels_xy, np.ones((len(pixels_xy), 1))], axis=-1)
    directions = homogeneous @ np.linalg.inv(intrinsic).T @ rotation
    centre = -rotation.T @ extrinsic[:, 3]
    return np.broadcast_to(centre, directions.shape).copy(), directions


def _surface_queries(
    layout: SceneLayout, intrinsic: np.ndarray, extrinsic: np.ndarray, image_hw: tuple[int, int], count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`count` random pixels (x, y) of one view that see a surface (not the sky), and their world points [N, 3]."""
    height, width = image_hw
    pixels, points = np.zeros((0, 2)), np.zeros((0, 3))
    for _ in range(MAX_QUERY_DRAWS):
        candidates = rng.uniform([0.0, 0.0], [width - 1.0, height - 1.0], size=(QUERY_OVERSAMPLING * count, 2))
        origins, directions = _pixel_rays(intrinsic, extrinsic, candidates)
        depth, _, _ = _first_hits(layout, origins, directions)
        hit = np.isfinite(depth)
        pixels = np.concatenate([pixels, candidates[hit]])
        points = np.concatenate([points, origins[hit] + depth[hit, None] * directions[hit]])
        if len(pixels) >= count:
            return pixels[:count], points[:count]
    raise ValueError(f"the view sees too little surface to place {count} query points")


def synthetic_tracks(
    layout: SceneLayout,
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
    image_hw: tuple[int, int],
    query_frames: np.ndarray,
    rng: np.random.Generator,
) -> SceneTracks:
    """Exact tracks of surface points queried at random pixels of frames `query_frames` [N] (see vggt.data.tracks).

    A point is visible in a frame when it projects onto the image, in front of the camera, and the ray of that
    pixel meets no other surface first.
    """
    query_frames = np.asarray(query_frames, dtype=np.int64)
    query_points, world = np.zeros((len(query_frames), 2)), np.zeros((len(query_frames), 3))
    for frame in np.unique(query_frames):
        which = np.flatnonzero(query_frames == frame)
        query_points[which], world[which] = _surface_queries(
            layout, intrinsics[frame], extrinsics[frame], image_hw, len(which), rng
        )
    camera = np.einsum("sij,nj->sni", extrinsics[:, :, :3], world) + extrinsics[:, None, :, 3]  # [S, N, 3]
    z = camera[..., 2]
    in_front = z > MIN_TRACK_DEPTH
    pixels = np.einsum("sij,snj->sni", intrinsics, camera)
    tracks = np.where(in_front[..., None], pixels[..., :2] / np.where(in_front, z, 1.0)[..., None], 0.0)
    height, width = image_hw
    inside = (tracks[..., 0] >= -0.5) & (tracks[..., 0] <= width - 0.5)
    inside &= (tracks[..., 1] >= -0.5) & (tracks[..., 1] <= height - 0.5)
    visible = in_front & inside
    for frame in range(len(extrinsics)):
        origins, directions = _pixel_rays(intrinsics[frame], extrinsics[frame], tracks[frame])
        depth, _, _ = _first_hits(layout, origins, directions)
        visible[frame] &= np.abs(depth - z[frame]) <= VISIBILITY_DEPTH_TOLERANCE * z[frame]
    points = np.arange(len(query_frames))
    tracks[query_frames, points], visible[query_frames, points] = query_points, True
    return SceneTracks(query_frames, query_points.astype(np.float32), tracks.astype(np.float32), visible)


def generate_scene(
    num_frames: int = 8,
    height: int = 56,
    width: int = 70,
    seed: int = 0,
    layout: SceneLayout | None = None,
    name: str | None = None,
    num_tracks: int = 0,
    rng: np.random.Generator | None = None,
) -> Scene:
    """A rendered synthetic scene: images, exact depth, intrinsics and extrinsics for `num_frames` views, and
    exact ground-truth tracks of `num_tracks` points queried in the first frame.

    `seed` (or a generator `rng`, which takes precedence) draws the layout (unless `layout` is given), the cameras
    and the query points.
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"need at least one frame of at least 1x1 pixels, got {num_frames} x {height}x{width}")
    rng = np.random.default_rng(seed) if rng is None else rng
    if layout is None:
        layout = sample_layout(rng)
    intrinsics, extrinsics = sample_cameras(rng, num_frames, height, width, layout.front_azimuth)
    images, depths = render(layout, intrinsics, extrinsics, height, width)
    tracks = None
    if num_tracks > 0:
        query_frames = np.zeros(num_tracks, dtype=np.int64)
        tracks = synthetic_tracks(layout, intrinsics, extrinsics, (height, width), query_frames, rng)
    return Scene(
        name=name or f"synthetic_{seed:04d}",
        image_names=[f"frame_{i:04d}.png" for i in range(num_frames)],
        intrinsics=intrinsics,
        extrinsics=extrinsics,
        image_hw=np.tile([height, width], (num_frames, 1)),
        images=images,
        depths=depths,
        tracks=tracks,
    )


def layout_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of layout `index` of a synthetic dataset seeded `seed`: training (training.data's
    SyntheticSceneDataset) and held-out scenes (`write_heldout_dataset`) draw their layouts alike from it."""
    return np.random.default_rng([seed, index])


def write_synthetic_dataset(
    root: Path | str,
    num_scenes: int,
    num_frames: int = 8,
    height: int = 56,
    width: int = 70,
    seed: int = 0,
    depth_format: str = "npy",
    overwrite: bool = False,
    num_tracks: int = 0,
) -> list[Path]:
    """Write `num_scenes` synthetic scenes as scene folders `root/scene_0000`, ... and return their paths, with
    ground-truth tracks (tracks.npz) of `num_tracks` points each when positive.

    Scene i uses seed `seed + i`, so the same arguments always write the same dataset. For scenes held out from a
    training run, use `write_heldout_dataset`.
    """
    root = Path(root)
    paths = []
    for index in range(num_scenes):
        name = f"scene_{index:04d}"
        scene = generate_scene(num_frames, height, width, seed=seed + index, name=name, num_tracks=num_tracks)
        paths.append(write_scene(root / scene.name, scene, depth_format=depth_format, overwrite=overwrite))
    return paths


def write_heldout_dataset(
    root: Path | str,
    num_scenes: int,
    seed: int,
    num_frames: int,
    height: int,
    width: int,
    num_tracks: int = 0,
    overwrite: bool = False,
) -> list[Path]:
    """Scene folders `root/scene_0000`, ... drawn as the synthetic training data draws its scenes (layout i from
    `layout_rng(seed, i)`, then cameras and query points from the same stream), rendered without colour jitter.

    A training run with another seed never sees these layouts: its layouts come from `layout_rng(its seed, i)`.
    """
    root = Path(root)
    paths = []
    for index in range(num_scenes):
        rng = layout_rng(seed, index)
        layout = sample_layout(rng)
        scene = generate_scene(
            num_frames, height, width, layout=layout, name=f"scene_{index:04d}", num_tracks=num_tracks, rng=rng
        )
        paths.append(write_scene(root / scene.name, scene, overwrite=overwrite))
    return paths


# ------------------------------------------------------------------------------------------------ command line


@dataclass(frozen=True)
class TrainingScenes:
    """How a synthetic training config draws its samples: its seed, frames per sample and image size."""

    seed: int
    num_frames: int
    height: int
    width: int


def training_scenes(config_path: Path | str) -> TrainingScenes:
    """The seed, the largest number of frames per sample and the image size of a synthetic training config (its
    YAML file as written; `data.image.aspect_range` gives its mean aspect ratio)."""
    from vggt.data.augment import AugmentConfig, target_shape

    try:
        import yaml
    except ImportError:
        raise DependencyError("reading a training config needs PyYAML: pip install 'vggt[train]'") from None
    path = Path(config_path)
    if not path.is_file():
        raise InputError("{like} {path} is not a file; give a training config such as configs/x.yaml", path=path)
    document = yaml.safe_load(path.read_text()) or {}
    data = document.get("data") or {}
    if data.get("source", "synthetic") != "synthetic":
        raise InputError("{like} {path} trains on scene folders, not synthetic scenes (data.source)", path=path)
    if not data.get("num_frames"):
        raise InputError("{like} {path} sets no data.num_frames; pass {num_frames}", path=path)
    image = data.get("image") or {}
    keys = ("max_size", "patch_size", "aspect_range")
    augment = AugmentConfig(**{key: image[key] for key in keys if key in image})
    aspect = float(np.mean([float(value) for value in augment.aspect_range]))
    height, width = target_shape(aspect, augment.max_size, augment.patch_size)
    # A config without a seed trains with the trainer's default seed, 0 (training.config.DEFAULT_CONFIG).
    return TrainingScenes(int(document.get("seed", 0)), int(max(data["num_frames"])), height, width)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `python -m vggt.data.synthetic` (and `vggt synthesize`)."""
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write (scene_0000, ...)")
    parser.add_argument("--num-scenes", type=int, default=8, help="number of scenes (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed: scene i draws from (seed, i)")
    parser.add_argument(
        "--like", type=Path, default=None, help="a synthetic training config: its frames and image size, unseen seeds"
    )
    parser.add_argument("--num-frames", type=int, default=None, help=f"frames per scene (default {DEFAULT_FRAMES})")
    parser.add_argument("--height", type=int, default=None, help=f"image height (default {DEFAULT_HW[0]})")
    parser.add_argument("--width", type=int, default=None, help=f"image width (default {DEFAULT_HW[1]})")
    parser.add_argument(
        "--num-tracks", type=int, default=DEFAULT_TRACKS, help=f"tracked points per scene (default {DEFAULT_TRACKS})"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace scene folders that exist")
    return parser


def run(args: argparse.Namespace) -> int:
    frames, (height, width) = DEFAULT_FRAMES, DEFAULT_HW
    if args.like is not None:
        training = training_scenes(args.like)
        if args.seed == training.seed:
            raise InputError(
                "{seed} {value} is the training seed of {path}: its layouts are training scenes; choose another",
                value=args.seed,
                path=args.like,
            )
        frames, height, width = training.num_frames, training.height, training.width
    frames = args.num_frames or frames
    height, width = args.height or height, args.width or width
    for name, value in (("num_scenes", args.num_scenes), ("num_frames", frames), ("height", height),
                        ("width", width)):  # fmt: skip
        if value < 1:
            raise InputError("{" + name + "} must be at least 1, got {value}", value=value)
    if args.num_tracks < 0:
        raise InputError("{num_tracks} must be 0 or more, got {value}", value=args.num_tracks)
    paths = write_heldout_dataset(
        args.out, args.num_scenes, args.seed, frames, height, width, args.num_tracks, args.overwrite
    )
    print(f"wrote {len(paths)} scenes of {frames} frames at {width}x{height} to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    """`python -m vggt.data.synthetic`: exits the process with the command's exit code."""
    parser = argparse.ArgumentParser(prog="vggt synthesize", description=SYNTHESIZE_DESCRIPTION)
    sys.exit(run_main(add_arguments(parser), run, argv))


if __name__ == "__main__":
    main()
