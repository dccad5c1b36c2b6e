"""Inputs of a reconstruction: which image files (a folder, a list, or frames sampled from a video), loaded
for the model by the one image-loading path (`vggt.utils.load_fn.load_images`)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vggt.data.layout import IMAGES_DIR
from vggt.errors import InputError
from vggt.pipeline.video import is_video_file, sample_video_frames
from vggt.utils.images import IMAGE_EXTENSIONS, is_image_file, natural_sort_key
from vggt.utils.load_fn import LoadedImages, PreprocessTransform, load_images
from vggt.utils.sampling import evenly_spaced_indices

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
# Photos whose shorter side is below this, or that the preprocessing enlarges more than MAX_UPSAMPLING times,
# work but give poor results: the model was trained on photos of a few hundred pixels and more.
MIN_RECOMMENDED_SIDE = 224
MAX_UPSAMPLING = 4.0


@dataclass
class CollectedInputs:
    """The image files to reconstruct from, what was skipped, the images `max_frames` left out, and the
    temporary folder holding video frames."""

    image_paths: list[Path]
    skipped: list[Path] = field(default_factory=list)
    left_out: list[Path] = field(default_factory=list)
    video: Path | None = None
    frames_dir: tempfile.TemporaryDirectory | None = None

    def cleanup(self) -> None:
        """Delete sampled video frames (a no-op for photos)."""
        if self.frames_dir is not None:
            self.frames_dir.cleanup()


def collect_inputs(
    inputs: PathLike | Sequence[PathLike],
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
        raise InputError("{max_frames} must be at least 1, got {value}", value=max_frames)
    if fps is not None and not fps > 0:
        raise InputError("{fps} must be positive, got {value}", value=fps)
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if not paths:
        raise InputError("no input given: pass a folder of images, image files, or a video file")
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise InputError("input not found: {path}", path=missing[0])

    videos = [p for p in paths if p.is_file() and is_video_file(p)]
    if videos:
        if len(paths) > 1:
            raise InputError("pass either one video file or images, not both (nor several videos)")
        return _collect_video(videos[0], fps, max_frames, progress)
    if fps is not None:
        raise InputError("{fps} applies to a video input only; use {max_frames} to thin out images")
    if len(paths) == 1 and paths[0].is_dir():
        images, skipped = _folder_images(paths[0])
    else:
        images, skipped = _listed_images(paths), []

    names = [p.name for p in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(
            "several inputs are named {name}: outputs are named after the inputs, rename one", name=duplicates[0]
        )
    keep = evenly_spaced_indices(len(images), max_frames)
    kept = set(keep)
    left_out = [p for i, p in enumerate(images) if i not in kept]
    return CollectedInputs(image_paths=[images[i] for i in keep], skipped=skipped, left_out=left_out)


def _folder_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(images, other entries) of a folder, or of its images/ subfolder when the folder holds no image."""
    try:
        entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_sort_key)
    except PermissionError:
        raise InputError("cannot list the folder {folder}: permission denied", folder=folder) from None
    images = [p for p in entries if p.is_file() and is_image_file(p)]
    if not images and (folder / IMAGES_DIR).is_dir():
        return _folder_images(folder / IMAGES_DIR)
    skipped = [p for p in entries if p not in images]
    if not images:
        others = f"; it holds {len(skipped)} other entries" if skipped else ""
        raise InputError(
            "no images in {folder} (looked for {extensions}){others}",
            folder=folder,
            extensions=", ".join(IMAGE_EXTENSIONS),
            others=others,
        )
    return images, skipped


def _listed_images(paths: list[Path]) -> list[Path]:
    dirs = [p for p in paths if p.is_dir()]
    if dirs:
        raise InputError("{path} is a folder: pass one folder, or image files, not a mix", path=dirs[0])
    not_images = [p for p in paths if not is_image_file(p)]
    if not_images:
        raise InputError(
            "{path} is not an image or video file (by its extension); images: {extensions}",
            path=not_images[0],
            extensions=", ".join(IMAGE_EXTENSIONS),
        )
    return paths


def _collect_video(video: Path, fps: float | None, max_frames: int | None, progress: bool) -> CollectedInputs:
    frames_dir = tempfile.TemporaryDirectory(prefix="vggt-frames-")
    try:
        frames = sample_video_frames(video, frames_dir.name, fps=fps, max_frames=max_frames, progress=progress)
    except BaseException:
        frames_dir.cleanup()
        raise
    return CollectedInputs(image_paths=frames, video=video, frames_dir=frames_dir)


def load_input_images(
    paths: Sequence[Path],
    mode: str,
    resolution: int,
    patch_size: int,
    progress: bool = False,
    pad_to: tuple[int, int] | None = None,
) -> LoadedImages:
    """Preprocess `paths` for the model (`vggt.utils.load_fn.load_images`) with a progress bar; `pad_to`
    (width, height) pads every image to that size (batches loaded separately then share one shape).

    Raises InputError naming the file for an unreadable or corrupt image.
    """
    from tqdm.auto import tqdm

    if resolution < patch_size or resolution % patch_size:
        raise InputError(
            "{resolution} must be a positive multiple of the patch size {patch}, got {value}",
            patch=patch_size,
            value=resolution,
        )
    size = {"mode": mode, "target_size": resolution, "patch_size": patch_size}
    try:
        bar = tqdm(paths, desc="loading", unit="img", disable=not progress)
        singles = [load_images([p], **size) for p in bar]
    except InputError:
        raise
    except ValueError as err:  # e.g. a photo too elongated for one patch
        raise InputError("{error}", error=err) from None
    warn_about_small_images([s.transforms[0] for s in singles], paths)
    if pad_to is not None:
        return load_images(list(paths), **size, pad_to=pad_to)
    if len({tuple(s.images.shape[-2:]) for s in singles}) == 1:
        return LoadedImages(
            images=torch.cat([s.images for s in singles]),
            transforms=[s.transforms[0] for s in singles],
            paths=[Path(p) for p in paths],
        )
    # Photos of different shapes: let the loader pad them all to one size (as the reference does).
    return load_images(list(paths), **size)


def warn_about_small_images(transforms: Sequence[PreprocessTransform], paths: Sequence[Path]) -> list[Path]:
    """Warn (once, listing a few) about photos that are tiny or enlarged a lot; returns them."""
    small = [
        Path(path)
        for path, transform in zip(paths, transforms)
        if min(transform.original_size) < MIN_RECOMMENDED_SIDE or max(transform.scale) > MAX_UPSAMPLING
    ]
    if small:
        names = ", ".join(p.name for p in small[:5]) + (" ..." if len(small) > 5 else "")
        logger.warning(
            "%d photo(s) are smaller than %d pixels on a side or enlarged more than %gx for the model (%s): "
            "expect poor results; use photos of a few hundred pixels or more",
            len(small),
            MIN_RECOMMENDED_SIDE,
            MAX_UPSAMPLING,
            names,
        )
    return small
