"""The implementation of `vggt.reconstruct`: inputs, inference, point selection, `Reconstruction` and its writers."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vggt.device import (
    autocast,
    check_memory,
    estimate_inference_memory,
    resolve_device,
    resolve_dtype,
)
from vggt.export.cameras import write_cameras_json
from vggt.export.colmap import Observations, write_colmap
from vggt.export.depth import unique_stems, write_depth_maps
from vggt.export.glb import write_glb
from vggt.export.ply import write_ply
from vggt.models.config import VGGTConfig, get_preset
from vggt.pipeline.options import (
    DEFAULT_CHECKPOINT,
    DEFAULT_CONF_PERCENTILE,
    DEFAULT_MAX_POINTS,
    MODES,
    POINT_SOURCES,
)
from vggt.utils.geometry import pixel_grid, unproject_depth_map_to_point_map
from vggt.utils.images import IMAGE_EXTENSIONS, is_image_file, natural_sort_key, read_image_rgb
from vggt.utils.load_fn import LoadedImages, PreprocessTransform, load_images, rescale_intrinsics_to_original
from vggt.utils.pose_enc import pose_encoding_to_extri_intri
from vggt.video import is_video_file, sample_video_frames

logger = logging.getLogger(__name__)

# Seed of the random subsampling to `max_points`, so that runs are repeatable.
POINT_SUBSAMPLE_SEED = 0
# A pinhole camera needs a field of view strictly between 0 and 180 degrees; predictions outside this range
# (seen with random weights) are clamped, with a warning, so that every exported camera is finite.
FOV_RANGE_DEG = (1.0, 179.0)
# Bundle-adjusted points seen fewer times than this are left out of the COLMAP model.
MIN_TRACK_OBSERVATIONS = 2
# Raw model outputs kept in predictions.npz.
PREDICTION_KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")

# Output layout of `Reconstruction.save`.
SPARSE_SUBDIR = Path("sparse") / "0"
IMAGES_SUBDIR = "images"
DEPTH_SUBDIR = "depth"
PLY_NAME = "points.ply"
GLB_NAME = "scene.glb"
CAMERAS_NAME = "cameras.json"
PREDICTIONS_NAME = "predictions.npz"

# Input images that can be copied into `images/` byte for byte; others are re-encoded upright 8-bit RGB.
_COPYABLE_MODES = ("RGB",)
_EXIF_ORIENTATION_TAG = 0x0112
_JPEG_QUALITY = 95


class InputError(ValueError):
    """Bad input or options (missing or unreadable files, no images, a non-empty output folder...)."""


# ------------------------------------------------------------------------------------------------------ inputs


@dataclass
class CollectedInputs:
    """The image files to reconstruct from, what was skipped, and the temporary folder holding video frames."""

    image_paths: list[Path]
    skipped: list[Path] = field(default_factory=list)
    video: Path | None = None
    frames_dir: tempfile.TemporaryDirectory | None = None


def _evenly_spaced(items: list[Path], max_count: int | None) -> list[Path]:
    if max_count is None or len(items) <= max_count:
        return items
    keep = np.round(np.linspace(0, len(items) - 1, max_count)).astype(int)
    return [items[i] for i in keep]


def collect_inputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    fps: float | None = None,
    max_frames: int | None = None,
    progress: bool = False,
) -> CollectedInputs:
    """Resolve a folder of images, a list of image files, or one video file into image paths.

    A folder is read non-recursively (or its `images/` subfolder, when the folder itself holds no image);
    files that are not images are skipped and reported. A video is sampled with `fps` / `max_frames` into a
    temporary folder. `max_frames` also thins out a folder or list of images (evenly spaced).
    """
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, got {max_frames}")
    if fps is not None and not fps > 0:
        raise InputError(f"--fps must be positive, got {fps}")
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if not paths:
        raise InputError("no input given: pass a folder of images, image files, or a video file")
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise InputError(f"input not found: {missing[0]}")

    videos = [p for p in paths if p.is_file() and is_video_file(p)]
    if videos:
        if len(paths) > 1:
            raise InputError("pass either one video file or images, not both (nor several videos)")
        return _collect_video(videos[0], fps, max_frames, progress)
    if fps is not None:
        raise InputError("--fps applies to a video input only; use --max-frames to thin out images")

    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_sort_key)
        images = [p for p in entries if p.is_file() and is_image_file(p)]
        if not images and (folder / IMAGES_SUBDIR).is_dir():
            folder = folder / IMAGES_SUBDIR
            entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_sort_key)
            images = [p for p in entries if p.is_file() and is_image_file(p)]
        skipped = [p for p in entries if p not in images]
        if not images:
            raise InputError(
                f"no images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})"
                + (f"; it holds {len(skipped)} other entries" if skipped else "")
            )
    else:
        dirs = [p for p in paths if p.is_dir()]
        if dirs:
            raise InputError(f"{dirs[0]} is a folder: pass one folder, or image files, not a mix")
        not_images = [p for p in paths if not is_image_file(p)]
        if not_images:
            raise InputError(
                f"{not_images[0]} is not an image or video file (by its extension); images: "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        images, skipped = paths, []

    names = [p.name for p in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"several inputs are named {duplicates[0]}: outputs are named after the inputs, rename one")
    return CollectedInputs(image_paths=_evenly_spaced(images, max_frames), skipped=skipped)


def _collect_video(video: Path, fps: float | None, max_frames: int | None, progress: bool) -> CollectedInputs:
    frames_dir = tempfile.TemporaryDirectory(prefix="vggt-frames-")
    try:
        frames = sample_video_frames(video, frames_dir.name, fps=fps, max_frames=max_frames, progress=progress)
    except ValueError as err:
        frames_dir.cleanup()
        raise InputError(str(err)) from None
    except BaseException:
        frames_dir.cleanup()
        raise
    return CollectedInputs(image_paths=frames, video=video, frames_dir=frames_dir)


def load_input_images(
    paths: Sequence[Path], mode: str, resolution: int, patch_size: int, progress: bool = False
) -> LoadedImages:
    """Preprocess `paths` for the model (`vggt.utils.load_fn.load_images`) with a progress bar.

    Raises InputError naming the file for an unreadable or corrupt image.
    """
    from tqdm.auto import tqdm

    if mode not in MODES:
        raise InputError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")
    if resolution < patch_size or resolution % patch_size:
        raise InputError(f"--resolution must be a positive multiple of the patch size {patch_size}, got {resolution}")
    size = {"mode": mode, "target_size": resolution, "patch_size": patch_size}
    try:
        bar = tqdm(paths, desc="loading", unit="img", disable=not progress)
        singles = [load_images([p], **size) for p in bar]
        if len({tuple(s.images.shape[-2:]) for s in singles}) == 1:
            return LoadedImages(
                images=torch.cat([s.images for s in singles]),
                transforms=[s.transforms[0] for s in singles],
                paths=[Path(p) for p in paths],
            )
        # Photos of different shapes: let the loader pad them all to one size (as the reference does).
        return load_images(list(paths), **size)
    except ValueError as err:
        raise InputError(str(err)) from None


# ------------------------------------------------------------------------------------------------------ model


def load_model(
    checkpoint: str | os.PathLike | None = None, preset: str | None = None, device: torch.device | str = "cpu"
):  # -> VGGT
    """A VGGT in eval mode on `device`: weights from `checkpoint` (Hub id, folder or file; default
    `facebook/VGGT-1B`), or with `preset` and no checkpoint, random weights of that preset."""
    from vggt.models.checkpoint import CheckpointError
    from vggt.models.vggt import VGGT

    try:
        if checkpoint is None and preset is not None:
            logger.warning(
                "no --checkpoint: running the %r preset with RANDOM weights (outputs are meaningless)", preset
            )
            model = VGGT.from_preset(preset)
        else:
            model = VGGT.from_pretrained(checkpoint or DEFAULT_CHECKPOINT, preset=preset, device="cpu")
    except (CheckpointError, FileNotFoundError, ValueError) as err:  # ValueError: e.g. an unknown preset name
        raise InputError(str(err)) from None
    return model.to(device).eval()


def _expected_config(preset: str | None) -> VGGTConfig:
    """The configuration a model will have before it is loaded: the preset's, else VGGT-1B's."""
    try:
        return get_preset(preset) if preset is not None else VGGTConfig()
    except ValueError as err:
        raise InputError(str(err)) from None


@contextlib.contextmanager
def _frames_chunk_size(model: torch.nn.Module, chunk_size: int | None) -> Iterator[None]:
    """Temporarily set how many frames the dense heads process at a time."""
    if chunk_size is None:
        yield
        return
    previous = model.config.frames_chunk_size
    model.config.frames_chunk_size = chunk_size
    try:
        yield
    finally:
        model.config.frames_chunk_size = previous


@contextlib.contextmanager
def _inference_progress(model: torch.nn.Module, num_frames: int, enabled: bool) -> Iterator[None]:
    """A progress bar over the model's stages: aggregator, camera head, and each dense head's frame chunks."""
    from tqdm.auto import tqdm

    chunk = model.config.frames_chunk_size or num_frames
    chunks = -(-num_frames // chunk)
    stages: list[tuple[torch.nn.Module, str]] = []
    for name in ("aggregator", "camera_head"):
        module = getattr(model, name, None)
        if module is not None:
            stages.append((module, name))
    for name in ("depth_head", "point_head"):
        head = getattr(model, name, None)
        if head is not None:
            # The fusion block runs once per chunk of frames; fall back to the whole head.
            stages.extend([(getattr(head, "scratch", head), name)] * (chunks if hasattr(head, "scratch") else 1))
    bar = tqdm(total=len(stages), desc="inference", unit="step", disable=not enabled)

    def advance(*_: Any) -> None:  # a forward hook must return None, or it replaces the module's output
        bar.update(1)

    handles = [module.register_forward_hook(advance) for module in {id(m): m for m, _ in stages}.values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        bar.close()


# ------------------------------------------------------------------------------------------------------ result


@dataclass
class Reconstruction:
    """Cameras, depth and a coloured point cloud for S images.

    Attributes:
        image_names: S file names, as the inputs are named.
        image_paths: S source files (copied into `images/` by `save` and `to_colmap`).
        image_sizes: [S, 2] int (width, height) of the original (upright) images.
        extrinsics: [S, 3, 4] float32 camera-from-world (OpenCV: x right, y down, z forward).
        intrinsics: [S, 3, 3] float32 at the ORIGINAL resolution of each image.
        depth: [S, H, W] float32 depth at the model's input resolution H x W.
        depth_conf: [S, H, W] float32 confidence of `depth` (>= 1, higher is better).
        model_intrinsics: [S, 3, 3] float32 intrinsics of the H x W depth maps.
        transforms: S preprocessing transforms (original pixels -> model input pixels).
        points: [N, 3] float32 world coordinates; colors: [N, 3] uint8 RGB.
        observations: the pixel each point came from (image index and original-pixel coordinates).
        predictions: raw model outputs without the batch axis (pose_enc [S, 9], depth [S, H, W, 1], ...).
        points_source: "depth" (depth unprojected with the predicted cameras) or "pointmap" (point head).
        sparse: after bundle adjustment, the tracked points (points [M, 3], colours [M, 3], observations with
            whole tracks) that the COLMAP model holds instead of the dense cloud; None otherwise.
        source_video: the video the frames were sampled from, if any.
    """

    image_names: list[str]
    image_paths: list[Path]
    image_sizes: np.ndarray
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    model_intrinsics: np.ndarray
    transforms: list[PreprocessTransform]
    points: np.ndarray
    colors: np.ndarray
    observations: Observations
    predictions: dict[str, np.ndarray]
    points_source: str = "depth"
    sparse: tuple[np.ndarray, np.ndarray, Observations] | None = None
    source_video: Path | None = None
    seconds: float = 0.0
    # Keeps sampled video frames alive as long as the reconstruction refers to them.
    _frames_dir: Any = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.image_names)

    @property
    def num_points(self) -> int:
        return len(self.points)

    @property
    def bundle_adjusted(self) -> bool:
        """Whether cameras were refined by bundle adjustment (the COLMAP model then holds tracked points)."""
        return self.sparse is not None

    def depth_file_stems(self) -> list[str]:
        return unique_stems(self.image_names)

    # -------------------------------------------------------------------------------------------- writers

    def to_ply(self, path: str | os.PathLike) -> Path:
        """The point cloud as binary little-endian PLY (float32 xyz, uint8 rgb), N vertices."""
        return write_ply(path, self.points, self.colors)

    def to_glb(self, path: str | os.PathLike) -> Path:
        """Coloured points plus one camera frustum per image, in glTF's Y-up convention (see vggt.export.glb)."""
        return write_glb(
            path, self.points, self.colors, self.extrinsics, self.intrinsics, self.image_sizes, self.image_names
        )

    def to_colmap(self, directory: str | os.PathLike, copy_images: bool = True) -> Path:
        """A COLMAP scene: `directory/sparse/0/{cameras,images,points3D}.bin` and `directory/images/`.

        Cameras are PINHOLE at each image's original resolution; images keep their input names. Points are the
        dense cloud, each observed once (where it came from), or after bundle adjustment the tracked points with
        their tracks.
        """
        directory = Path(directory)
        points, colors, observations = self.sparse or (self.points, self.colors, self.observations)
        sparse = write_colmap(
            directory / SPARSE_SUBDIR,
            self.image_names,
            self.image_sizes,
            self.extrinsics,
            self.intrinsics,
            points,
            colors,
            observations,
        )
        if copy_images:
            self.copy_images(directory / IMAGES_SUBDIR)
        return sparse

    def copy_images(self, directory: str | os.PathLike) -> Path:
        """Copy the input images into `directory` under their names, upright and 8-bit RGB as the model saw them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for source, name in zip(self.image_paths, self.image_names):
            _copy_image(source, directory / name)
        return directory

    def to_cameras_json(self, path: str | os.PathLike) -> Path:
        """cameras.json: per image file_name, width, height, extrinsic (3x4) and intrinsic (3x3, original size),
        and `depth_file`, the depth map at the same resolution."""
        extra = [{"depth_file": f"{DEPTH_SUBDIR}/{stem}.npy"} for stem in self.depth_file_stems()]
        return write_cameras_json(path, self.image_names, self.image_sizes, self.extrinsics, self.intrinsics, extra)

    def original_depth(self, index: int) -> np.ndarray:
        """Depth of image `index` at its original resolution [height, width] (0 where the model did not see)."""
        return depth_at_original_resolution(self.depth[index], self.transforms[index])

    def save_depth(self, directory: str | os.PathLike) -> list[Path]:
        """`directory/<name>.npy` (float32, the photo's resolution, 0 = no depth) and `<name>.png` previews."""
        depths = (self.original_depth(i) for i in range(self.num_frames))  # one full-size map at a time
        return write_depth_maps(directory, self.image_names, depths)

    def save_predictions(self, path: str | os.PathLike) -> Path:
        """predictions.npz: the raw feed-forward outputs, their decoded cameras at the model resolution
        (`extrinsic`, `intrinsic`), the model input `images` (uint8 [S, 3, H, W]), the image names and sizes."""
        path = Path(path)
        np.savez(path, **self.predictions, image_names=np.array(self.image_names), image_sizes=self.image_sizes)
        return path

    def save(self, directory: str | os.PathLike, overwrite: bool = False, progress: bool = False) -> Path:
        """Write every output into `directory`, all or nothing.

        Everything is written to a temporary sibling folder first and moved into place at the end, so a
        failure leaves no half-written output. A non-empty `directory` is refused unless `overwrite`,
        which replaces it.
        """
        from tqdm.auto import tqdm

        directory = Path(directory)
        sources = [*self.image_paths, *([self.source_video] if self.source_video else [])]
        check_output_dir(directory, overwrite, sources)
        directory.parent.mkdir(parents=True, exist_ok=True)
        # A hidden sibling (same file system, so the final rename is atomic), created with the usual permissions.
        staging = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        steps = [
            ("COLMAP model", lambda: self.to_colmap(staging)),
            ("point cloud", lambda: self.to_ply(staging / PLY_NAME)),
            ("GLB scene", lambda: self.to_glb(staging / GLB_NAME)),
            ("depth maps", lambda: self.save_depth(staging / DEPTH_SUBDIR)),
            ("cameras", lambda: self.to_cameras_json(staging / CAMERAS_NAME)),
            ("predictions", lambda: self.save_predictions(staging / PREDICTIONS_NAME)),
        ]
        try:
            with tqdm(steps, desc="export", unit="file", disable=not progress) as bar:
                for label, write in bar:
                    bar.set_postfix_str(label)
                    write()
            _move_into_place(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory

    def summary(self, directory: str | os.PathLike | None = None, seconds: float | None = None) -> str:
        """One line: frames, points kept, time (default: of `reconstruct`), and where the outputs went."""
        where = f", written to {directory}" if directory is not None else ""
        ba = ", bundle adjusted" if self.bundle_adjusted else ""
        seconds = self.seconds if seconds is None else seconds
        points = f"{self.num_points} points (from {self.points_source}{ba})"
        return f"{self.num_frames} frames, {points} in {seconds:.1f} s{where}"


def depth_at_original_resolution(depth: np.ndarray, transform: PreprocessTransform) -> np.ndarray:
    """Resample a depth map [H, W] of the model input onto the original photo [height, width].

    Each photo pixel takes the depth of the nearest model-input pixel (no blending across depth edges);
    photo pixels the model did not see (cropped away) and non-finite depths get 0.
    """
    width, height = transform.original_size
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    # The transform is a per-axis scale and shift, so rows and columns map independently.
    cols = np.round(transform.original_to_input(np.stack([xs, np.zeros_like(xs)], -1))[:, 0]).astype(np.int64)
    rows = np.round(transform.original_to_input(np.stack([np.zeros_like(ys), ys], -1))[:, 1]).astype(np.int64)
    col_ok = (cols >= 0) & (cols < depth.shape[1])
    row_ok = (rows >= 0) & (rows < depth.shape[0])
    resampled = depth[np.clip(rows, 0, depth.shape[0] - 1)][:, np.clip(cols, 0, depth.shape[1] - 1)]
    resampled = np.where(row_ok[:, None] & col_ok[None, :] & np.isfinite(resampled), resampled, 0.0)
    return resampled.astype(np.float32)


def check_output_dir(directory: str | os.PathLike, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse an output path that is a file, a non-empty folder without `overwrite`, or one holding `inputs`."""
    directory = Path(directory)
    resolved = directory.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if source == resolved or resolved in source.parents:
            raise InputError(f"output folder {directory} holds the input {source}; choose another output folder")
    if directory.exists() and not directory.is_dir():
        raise InputError(f"output {directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise InputError(f"output folder {directory} is not empty; pass --overwrite to replace it, or choose another")


def _move_into_place(staging: Path, directory: Path) -> None:
    """Replace `directory` with `staging` (same parent, so the renames are atomic)."""
    if not directory.exists():
        staging.rename(directory)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    retired.rmdir()
    directory.rename(retired)
    try:
        staging.rename(directory)
    except BaseException:
        retired.rename(directory)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _copy_image(source: Path, target: Path) -> None:
    """Copy an upright 8-bit RGB image as is; re-encode others (EXIF-rotated, palette, 16-bit, CMYK...) upright RGB."""
    from PIL import Image

    with Image.open(source) as image:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        copyable = image.mode in _COPYABLE_MODES and orientation == 1 and "transparency" not in image.info
        image_format = image.format
    if copyable:
        shutil.copyfile(source, target)
        return
    rgb = read_image_rgb(source)
    options = {"quality": _JPEG_QUALITY} if image_format == "JPEG" else {}
    rgb.save(target, format=image_format, **options)


# ------------------------------------------------------------------------------------------------------ points


def select_points(
    world_points: np.ndarray,
    confidence: np.ndarray,
    images: np.ndarray,
    transforms: Sequence[PreprocessTransform],
    conf_percentile: float = DEFAULT_CONF_PERCENTILE,
    max_points: int | None = DEFAULT_MAX_POINTS,
    seed: int = POINT_SUBSAMPLE_SEED,
) -> tuple[np.ndarray, np.ndarray, Observations]:
    """Pick the confident pixels of S point maps as a point cloud.

    A pixel is valid when its point and confidence are finite and it lies on the original photo (not on
    padding). Valid pixels whose confidence is below the `conf_percentile`-th percentile of the valid
    confidences are dropped; if more than `max_points` remain, `max_points` of them are drawn at random
    (seeded). So the cloud has min(max_points, kept) points.

    Args:
        world_points: [S, H, W, 3]; confidence: [S, H, W]; images: [S, H, W, 3] uint8 colours.
        transforms: S preprocessing transforms (to map pixels back to the original photos).

    Returns:
        points [N, 3] float32, colours [N, 3] uint8, and the pixel each point came from (original coordinates).
    """
    if not 0 <= conf_percentile < 100:
        raise InputError(f"--conf-percentile must be in [0, 100), got {conf_percentile}")
    if max_points is not None and max_points < 1:
        raise InputError(f"--max-points must be at least 1, got {max_points}")
    num_frames, height, width = confidence.shape
    grid = pixel_grid(height, width).numpy()  # [H, W, 2] (x, y)
    valid = np.isfinite(world_points).all(-1) & np.isfinite(confidence)
    for i, transform in enumerate(transforms):
        original_xy = transform.input_to_original(grid)
        orig_w, orig_h = transform.original_size
        on_photo = (
            (original_xy >= -0.5).all(-1) & (original_xy[..., 0] < orig_w - 0.5) & (original_xy[..., 1] < orig_h - 0.5)
        )
        valid[i] &= on_photo

    keep = valid
    if conf_percentile > 0 and valid.any():
        threshold = np.percentile(confidence[valid], conf_percentile)
        keep = valid & (confidence >= threshold)
    flat = np.flatnonzero(keep)
    if max_points is not None and len(flat) > max_points:
        flat = np.sort(np.random.default_rng(seed).choice(flat, size=max_points, replace=False))
    frame, row, col = np.unravel_index(flat, keep.shape)

    points = world_points[frame, row, col].astype(np.float32)
    colors = images[frame, row, col].astype(np.uint8)
    xy = np.empty((len(flat), 2), dtype=np.float64)
    for i, transform in enumerate(transforms):
        in_frame = frame == i
        xy[in_frame] = transform.input_to_original(np.stack([col[in_frame], row[in_frame]], axis=-1).astype(np.float64))
    observations = Observations(point_index=np.arange(len(flat)), image_index=frame, xy=xy)
    return points, colors, observations


def _clamp_field_of_view(pose_enc: torch.Tensor) -> torch.Tensor:
    """Pose encodings [S, 9] with both fields of view clamped into FOV_RANGE_DEG (warns when any was outside)."""
    low, high = (float(np.deg2rad(v)) for v in FOV_RANGE_DEG)
    fov = pose_enc[..., 7:9]
    outside = ~((fov >= low) & (fov <= high)).all(-1)
    if outside.any():
        logger.warning(
            "degenerate field of view predicted for %d of %d images (random weights?); clamped to %g-%g deg",
            int(outside.sum()),
            len(pose_enc),
            *FOV_RANGE_DEG,
        )
    clamped = pose_enc.clone()
    clamped[..., 7:9] = torch.nan_to_num(fov, nan=low).clamp(low, high)
    return clamped


# ------------------------------------------------------------------------------------------------------ API


def reconstruct(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    model: torch.nn.Module | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    preset: str | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    mode: str = "crop",
    resolution: int | None = None,
    points: str = "depth",
    conf_percentile: float = DEFAULT_CONF_PERCENTILE,
    max_points: int | None = DEFAULT_MAX_POINTS,
    chunk_size: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    bundle_adjust: bool = False,
    ba_options: dict[str, Any] | None = None,
    memory_check: bool = True,
    progress: bool = False,
) -> Reconstruction:
    """Cameras, depth and a point cloud from a folder of images, image files, or a video.

    Args:
        inputs: a folder, a list of image files, or one video file.
        model: a VGGT to use (moved to `device`); None loads `checkpoint` (default facebook/VGGT-1B),
            or builds `preset` with random weights when only a preset is given.
        device, dtype: "auto" (see vggt.device) or explicit ("cpu", "cuda"; "float32", "bfloat16", "float16").
        mode: "crop" (width 518, centre-cropped height) or "pad" (longer side 518, padded to a square).
        resolution: the model input's width (crop) or longer side (pad), a multiple of the patch size;
            None uses the size the model was trained at (518). Smaller is faster and lighter, but less accurate.
        points: "depth" (depth unprojected with the predicted cameras) or "pointmap" (the point head).
        conf_percentile: drop the least confident X % of the pixels.
        max_points: keep at most this many points (random, seeded).
        chunk_size: frames per dense-head chunk (less memory for many frames); None keeps the model's.
        fps, max_frames: frame sampling of a video; max_frames also thins out images.
        bundle_adjust: refine the cameras by bundle adjustment on the model's own tracks (needs vggt[ba]).
        ba_options: keywords for `vggt.ba.postprocess.refine_with_ba` (reference frames, query points, filters).
        memory_check: estimate the memory first and stop with advice if it would not fit.
        progress: show tqdm progress bars.

    Raises:
        InputError: bad inputs or options (the message says what to change).
        InsufficientMemoryError: the run would not fit in memory.
    """
    start = time.perf_counter()
    if points not in POINT_SOURCES:
        raise InputError(f"unknown points source {points!r}; choose one of {', '.join(POINT_SOURCES)}")
    if mode not in MODES:
        raise InputError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")
    if not 0 <= conf_percentile < 100:
        raise InputError(f"--conf-percentile must be in [0, 100), got {conf_percentile}")
    if max_points is not None and max_points < 1:
        raise InputError(f"--max-points must be at least 1, got {max_points}")
    if chunk_size is not None and chunk_size < 1:
        raise InputError(f"--chunk-size must be at least 1, got {chunk_size}")
    try:
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(torch_device, dtype)
    except ValueError as err:
        raise InputError(str(err)) from None
    if bundle_adjust:
        _import_bundle_adjustment()  # fail before the expensive steps when theseus is missing

    collected = collect_inputs(inputs, fps=fps, max_frames=max_frames, progress=progress)
    if collected.skipped:
        logger.warning(
            "skipped %d non-image entries: %s", len(collected.skipped), ", ".join(p.name for p in collected.skipped)
        )
    try:
        # Images first, so that a bad photo is reported before a large checkpoint is loaded.
        config = model.config if model is not None else _expected_config(preset)
        resolution = resolution or config.img_size
        loaded = load_input_images(collected.image_paths, mode, resolution, config.patch_size, progress)
        if model is None:
            model = load_model(checkpoint, preset, torch_device)
        else:
            model = model.to(torch_device).eval()
        images = loaded.images.to(torch_device)
        num_frames, _, height, width = images.shape

        with _frames_chunk_size(model, chunk_size):
            if memory_check:
                estimate = estimate_inference_memory(
                    model.config,
                    num_frames,
                    height,
                    width,
                    dtype=torch_dtype,
                    num_parameters=sum(p.numel() for p in model.parameters()),
                    weight_bytes=next(model.parameters()).element_size(),
                    device_type=torch_device.type,
                )
                check_memory(estimate, torch_device, num_frames, height, width)
            logger.info("running on %s in %s: %d frames at %dx%d", torch_device, torch_dtype, num_frames, width, height)
            with torch.inference_mode(), autocast(torch_device, torch_dtype):
                with _inference_progress(model, num_frames, progress):
                    outputs = model(images[None])
        predictions = {
            key: outputs[key][0].float().cpu().numpy() for key in PREDICTION_KEYS if outputs.get(key) is not None
        }
        for key in ("pose_enc", "depth", "depth_conf"):
            if key not in predictions:
                raise InputError(f"the model has no {key} output: reconstruction needs the camera and depth heads")
        if points == "pointmap" and "world_points" not in predictions:
            raise InputError("--points pointmap needs the point head, which this model does not have; use depth")

        pose_enc = _clamp_field_of_view(torch.from_numpy(predictions["pose_enc"]))
        extrinsics_t, intrinsics_t = pose_encoding_to_extri_intri(pose_enc, (height, width))
        extrinsics = extrinsics_t.numpy().astype(np.float32)
        model_intrinsics = intrinsics_t.numpy().astype(np.float32)
        predictions["extrinsic"], predictions["intrinsic"] = extrinsics, model_intrinsics
        depth = predictions["depth"][..., 0]
        # The model input is 8-bit photos divided by 255 (white padding is 1.0), so uint8 holds it exactly.
        images_uint8 = (loaded.images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # [S, 3, H, W]
        colors_hw = images_uint8.transpose(0, 2, 3, 1)

        sparse = None
        if bundle_adjust:
            refinement = _run_bundle_adjustment(
                model, images, pose_enc, predictions, torch_device, torch_dtype, ba_options or {}
            )
            if refinement is not None:
                extrinsics = refinement.extrinsics.detach().cpu().numpy().astype(np.float32)
                model_intrinsics = refinement.intrinsics.detach().cpu().numpy().astype(np.float32)
                sparse = tracked_points(
                    refinement.points3d.detach().cpu().numpy(),
                    refinement.tracks.detach().cpu().numpy(),
                    refinement.observation_mask.cpu().numpy(),
                    colors_hw,
                    loaded.transforms,
                )

        if points == "depth":
            world_points = unproject_depth_map_to_point_map(depth, extrinsics, model_intrinsics)
            confidence = predictions["depth_conf"]
        else:
            world_points, confidence = predictions["world_points"], predictions["world_points_conf"]
        cloud, colors, observations = select_points(
            world_points, confidence, colors_hw, loaded.transforms, conf_percentile, max_points
        )
        predictions["images"] = images_uint8

        reconstruction = Reconstruction(
            image_names=[p.name for p in collected.image_paths],
            image_paths=list(collected.image_paths),
            image_sizes=np.array(loaded.original_sizes, dtype=np.int64),
            extrinsics=extrinsics,
            intrinsics=rescale_intrinsics_to_original(model_intrinsics, loaded.transforms).astype(np.float32),
            depth=depth.astype(np.float32),
            depth_conf=predictions["depth_conf"].astype(np.float32),
            model_intrinsics=model_intrinsics,
            transforms=list(loaded.transforms),
            points=cloud,
            colors=colors,
            observations=observations,
            predictions=predictions,
            points_source=points,
            sparse=sparse,
            source_video=collected.video,
            _frames_dir=collected.frames_dir,
        )
    except BaseException:
        if collected.frames_dir is not None:
            collected.frames_dir.cleanup()
        raise
    reconstruction.seconds = time.perf_counter() - start
    return reconstruction


# ------------------------------------------------------------------------------------------------------ BA


def _import_bundle_adjustment() -> None:
    """Fail early, in one line, when bundle adjustment's optional dependency (Theseus) is missing."""
    from vggt.ba.solver import import_theseus

    try:
        import_theseus()
    except ImportError as err:
        raise InputError(str(err).splitlines()[0]) from None


def _run_bundle_adjustment(
    model: torch.nn.Module,
    images: torch.Tensor,
    pose_enc: torch.Tensor,
    predictions: dict[str, np.ndarray],
    device: torch.device,
    dtype: torch.dtype,
    options: dict[str, Any],
):  # -> vggt.ba.postprocess.BARefinement | None
    """Refine the feed-forward cameras on the model's own tracks (vggt.ba); None when nothing could be refined."""
    from vggt.ba.postprocess import refine_with_ba

    if getattr(model, "track_head", None) is None:
        raise InputError("--ba needs the model's track head, which this model does not have")
    inputs = {"pose_enc": pose_enc, "depth": torch.from_numpy(predictions["depth"])}
    logger.info("bundle adjustment: tracking query points and refining %d cameras", len(pose_enc))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.inference_mode(), autocast(device, dtype):
                refinement = refine_with_ba(model, images, inputs, **options)
    except ValueError as err:
        raise InputError(f"bundle adjustment: {err}") from None
    for warning in caught:
        logger.warning("%s", warning.message)
    if not refinement.refined:
        return None
    return refinement


def tracked_points(
    points3d: np.ndarray,
    tracks: np.ndarray,
    mask: np.ndarray,
    images: np.ndarray,
    transforms: Sequence[PreprocessTransform],
    min_observations: int = MIN_TRACK_OBSERVATIONS,
) -> tuple[np.ndarray, np.ndarray, Observations]:
    """Bundle-adjusted points with their tracks, for the COLMAP model.

    Args:
        points3d: [N, 3]; tracks: [S, N, 2] pixels of the model input; mask: [S, N] observations kept.
        images: [S, H, W, 3] uint8, for the colours (mean over each point's observations).
        transforms: S preprocessing transforms, to express the observations in original pixels.

    Returns:
        points [M, 3], colours [M, 3] uint8 and observations, for the M points seen at least `min_observations` times.
    """
    keep = np.flatnonzero(mask.sum(0) >= min_observations)
    mask = mask[:, keep]
    frame, column = np.nonzero(mask)  # row-major: grouped by frame
    pixels = tracks[:, keep][frame, column]
    height, width = images.shape[1:3]
    x = np.clip(np.round(pixels[:, 0]).astype(int), 0, width - 1)
    y = np.clip(np.round(pixels[:, 1]).astype(int), 0, height - 1)
    sums = np.zeros((len(keep), 3))
    np.add.at(sums, column, images[frame, y, x].astype(np.float64))
    colors = np.round(sums / mask.sum(0)[:, None]).astype(np.uint8)
    xy = np.empty((len(frame), 2))
    for i, transform in enumerate(transforms):
        xy[frame == i] = transform.input_to_original(pixels[frame == i].astype(np.float64))
    observations = Observations(point_index=column, image_index=frame, xy=xy)
    return points3d[keep].astype(np.float32), colors, observations
