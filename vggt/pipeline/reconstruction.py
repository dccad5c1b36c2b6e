"""`Reconstruction`: cameras, depth and a point cloud for S photos, and the writers of its outputs.

`save(directory)` writes every output all or nothing (`vggt.utils.files.atomic_directory`); the folder layout
is `vggt.data.layout`'s: a COLMAP model in `sparse/0` beside `images/`, `points.ply`, `scene.glb`, `depth/`,
`cameras.json` (which makes the folder a scene folder too) and `predictions.npz`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggt.data.layout import (
    CAMERAS_FILE,
    DEPTH_DIR,
    DEPTH_PREVIEW_DIR,
    GLB_FILE,
    IMAGES_DIR,
    MASKS_DIR,
    PLY_FILE,
    PREDICTIONS_FILE,
    SPARSE_DIR,
    TRANSFORMS_FILE,
    depth_file_stems,
    write_cameras_json,
)
from vggt.errors import InputError, OutputError
from vggt.export.colmap import Observations, write_colmap
from vggt.export.depth import write_depth_maps
from vggt.export.glb import write_glb
from vggt.export.ply import write_ply
from vggt.export.trainer import DOWNSCALE_FACTORS, write_downscaled_images, write_scaled_maps, write_transforms_json
from vggt.pipeline.inference import Predictions, finite_or_zero
from vggt.pipeline.multiview import multiview_tracks
from vggt.pipeline.options import POINT_SOURCES, ExportOptions
from vggt.pipeline.points import (
    PointCloud,
    PointSelection,
    background_pixels,
    dense_cloud,
    depth_at_original_resolution,
    empty_cloud,
    on_photo_mask,
)
from vggt.pipeline.saved import cloud_arrays, export_arrays, read_reconstruction, transform_arrays
from vggt.pipeline.verify import verify_colmap_output, verify_reconstruction
from vggt.utils.cameras import Cameras
from vggt.utils.files import atomic_directory, check_output_folder
from vggt.utils.images import is_upright_rgb_file, read_image_rgb
from vggt.utils.load_fn import PreprocessTransform

logger = logging.getLogger(__name__)

# Formats that store 8-bit RGB exactly, with the options that make them do so.
LOSSLESS_SAVE_OPTIONS = {
    "PNG": {},
    "TIFF": {"compression": "tiff_deflate"},
    "BMP": {},
    "PPM": {},
    "WEBP": {"lossless": True},
}


@dataclass
class Reconstruction:
    """Cameras, depth and a coloured point cloud for S images.

    Attributes:
        cameras: S cameras at each photo's ORIGINAL (upright) resolution, named as the inputs: extrinsics
            [S, 3, 4] camera-from-world (OpenCV: x right, y down, z forward), intrinsics [S, 3, 3], image_wh [S, 2].
        image_paths: S source files (copied into `images/` by `save` and `to_colmap`).
        model_intrinsics: [S, 3, 3] float32 intrinsics on the model's input grid (that of the depth maps).
        predictions: the model's outputs on its input grid (depth, confidences, point maps, decoded cameras).
        transforms: S preprocessing transforms (original pixels -> model input pixels).
        cloud: the point cloud (points [N, 3] float32, colors [N, 3] uint8, the pixel each point came from).
        points_source: "depth" (depth unprojected with the cameras) or "pointmap" (point head).
        sparse: after bundle adjustment, the tracked points with whole tracks that the COLMAP model holds
            instead of the dense cloud; None otherwise.
        source_video: the video the frames were sampled from, if any. seconds: time `reconstruct` took.
        masked_pixels: pixels whose predictions were non-finite, left out of the cloud and stored as 0.
        windows: for a windowed run, the windows and how well they aligned (one line); None otherwise.
        given_poses: photos with a given camera pose (`poses=`): when any, every output is in the frame and
            units of those poses (cameras.json then makes no claim about metres), 0 otherwise.
        selection: which pixels make up `cloud` (confidence percentile, point limit, frames, background masks).
        export: how `save` writes the folder (camera model, shared camera, COLMAP points, masks, downscaled copies).
    """

    cameras: Cameras
    image_paths: list[Path]
    model_intrinsics: np.ndarray
    predictions: Predictions
    transforms: list[PreprocessTransform]
    cloud: PointCloud
    points_source: str = "depth"
    sparse: PointCloud | None = None
    source_video: Path | None = None
    seconds: float = 0.0
    masked_pixels: int = 0
    windows: str | None = None
    given_poses: int = 0
    # Keep sampled video frames and a windowed run's memory-mapped predictions alive as long as the
    # reconstruction refers to them.
    _frames_dir: Any = field(default=None, repr=False)
    _work_dir: Any = field(default=None, repr=False)
    selection: PointSelection = field(default_factory=PointSelection)
    export: ExportOptions = field(default_factory=ExportOptions)

    # ------------------------------------------------------------------------------------------ views

    @property
    def image_names(self) -> list[str]:
        return list(self.cameras.names)

    @property
    def image_wh(self) -> np.ndarray:
        """[S, 2] int (width, height) of the original photos."""
        return self.cameras.image_wh

    @property
    def extrinsics(self) -> np.ndarray:
        """[S, 3, 4] float32 camera-from-world."""
        return self.cameras.extrinsics.astype(np.float32)

    @property
    def intrinsics(self) -> np.ndarray:
        """[S, 3, 3] float32 at the original resolution of each photo."""
        return self.cameras.intrinsics.astype(np.float32)

    @property
    def depth(self) -> np.ndarray:
        """[S, H, W] float32 depth on the model's input grid."""
        return self.predictions.depth

    @property
    def depth_conf(self) -> np.ndarray:
        """[S, H, W] float32 confidence of `depth` (>= 1, higher is better)."""
        return self.predictions.depth_conf

    @property
    def points(self) -> np.ndarray:
        return self.cloud.points

    @property
    def colors(self) -> np.ndarray:
        return self.cloud.colors

    @property
    def observations(self) -> Observations:
        return self.cloud.observations

    @property
    def num_frames(self) -> int:
        return len(self.cameras)

    @property
    def num_points(self) -> int:
        return len(self.cloud.points)

    @property
    def bundle_adjusted(self) -> bool:
        """Whether cameras were refined by bundle adjustment (the COLMAP model then holds tracked points)."""
        return self.sparse is not None

    @functools.cached_property
    def colmap_cloud(self) -> PointCloud:
        """The points of the COLMAP model: after bundle adjustment its tracked points, else the dense cloud's points
        seen in two frames or more with all their observations (`vggt.pipeline.multiview`); none when
        `export.colmap_points` is False."""
        if not self.export.colmap_points:
            return empty_cloud()
        if self.sparse is not None:
            return self.sparse
        predictions = self.predictions
        return multiview_tracks(
            self.cloud,
            predictions.depth,
            predictions.depth_conf,
            self.extrinsics,
            self.model_intrinsics,
            self.transforms,
        )

    def depth_file_stems(self) -> list[str]:
        """The names (without .npy / .png) of the depth files in `depth/`, unique for any image names."""
        return depth_file_stems(self.image_names)

    def original_depth(self, index: int) -> np.ndarray:
        """Depth of image `index` at its original resolution [height, width] (0 where the model did not see)."""
        return depth_at_original_resolution(self.depth[index], self.transforms[index])

    # ------------------------------------------------------------------------------------------ re-selection

    def select(self, points: str | None = None, **selection: Any) -> Reconstruction:
        """A copy with its dense cloud chosen anew from the cached predictions (the model does not run again).

        Args:
            points: "depth" (depth unprojected with the cameras) or "pointmap" (point head); None: as now.
            selection: `PointSelection` fields to change, the others keep their values: `conf_percentile`,
                `max_points` (None: no limit), `frames` (indices of the frames whose pixels are used; None: all),
                `mask_black_background`, `mask_white_background`.

        Raises:
            InputError: an unknown point source or selection field, or a value out of range.
        """
        source = self.points_source if points is None else points
        if source not in POINT_SOURCES:
            raise InputError(
                "unknown {points} source {value!r}; choose one of {choices}",
                value=source,
                choices=", ".join(POINT_SOURCES),
            )
        unknown = sorted(set(selection) - set(PointSelection.__dataclass_fields__))
        if unknown:
            raise InputError(
                "unknown point selection {names}; choose among {choices}",
                names=", ".join(unknown),
                choices=", ".join(PointSelection.__dataclass_fields__),
            )
        if selection.get("frames") is not None:
            selection["frames"] = tuple(int(i) for i in selection["frames"])
        if source == "pointmap":
            self.predictions.require("world_points")
        chosen = dataclasses.replace(self.selection, **selection)
        cloud = dense_cloud(self.predictions, self.extrinsics, self.model_intrinsics, self.transforms, source, chosen)
        return dataclasses.replace(self, cloud=cloud, points_source=source, selection=chosen)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Reconstruction:
        """Read back a folder written by `save` (cameras from cameras.json, predictions and the cloud's selection
        from predictions.npz, photos in images/); the cloud is re-selected exactly as it was saved.

        Raises:
            InputError: not such a folder; SceneFormatError: its files are unreadable or disagree.
        """
        return cls(**read_reconstruction(directory))

    # ------------------------------------------------------------------------------------------ writers

    def to_ply(self, path: str | os.PathLike) -> Path:
        """The point cloud as binary little-endian PLY (float32 xyz, uint8 rgb), N vertices."""
        return write_ply(path, self.points, self.colors)

    def to_glb(self, path: str | os.PathLike) -> Path:
        """Coloured points plus one camera frustum per image, in glTF's Y-up convention (see vggt.export.glb)."""
        return write_glb(path, self.points, self.colors, self.cameras)

    def to_colmap(self, directory: str | os.PathLike, copy_images: bool = True) -> Path:
        """A COLMAP scene: `directory/sparse/0/{cameras,images,points3D}.bin` and `directory/images/`.

        Cameras are of `export.camera_model` at each image's original resolution, one per image or one shared
        (`export.shared_camera`); images keep their input names. Points are `colmap_cloud`: multi-view tracks
        with their reprojection errors, which COLMAP's bundle adjuster refines.
        """
        directory = Path(directory)
        points, colors, observations = self.colmap_cloud
        export = self.export
        sparse = write_colmap(
            directory / SPARSE_DIR,
            self.cameras,
            points,
            colors,
            observations,
            export.camera_model,
            export.shared_camera,
        )
        if copy_images:
            self.copy_images(directory / IMAGES_DIR)
        return sparse

    def copy_images(self, directory: str | os.PathLike) -> Path:
        """Copy the input images into `directory` under their names, exactly as the model saw them (see
        `copy_image`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        as_png = [
            name for source, name in zip(self.image_paths, self.image_names) if copy_image(source, directory / name)
        ]
        if as_png:
            logger.warning(
                "%d images are stored losslessly as PNG data under their own names (their format cannot hold the "
                "converted pixels exactly): %s",
                len(as_png),
                ", ".join(as_png[:5]) + (" ..." if len(as_png) > 5 else ""),
            )
        return directory

    def to_cameras_json(self, path: str | os.PathLike) -> Path:
        """cameras.json: per image file_name, width, height, extrinsic (3x4) and intrinsic (3x3, original size),
        and `depth_file`, the depth map at the same resolution; `metric`: whether translations and depth are in
        (approximate) metres, as a metric model (Pi3X) predicts them, or up to an unknown scale; left out when the
        outputs are in the frame and units of given poses (`given_poses`), which only their maker knows."""
        extra = [{"depth_file": f"{DEPTH_DIR}/{stem}.npy"} for stem in self.depth_file_stems()]
        metric = None if self.given_poses else self.predictions.metric
        return write_cameras_json(path, self.cameras, extra, metric=metric)

    def save_depth(
        self, directory: str | os.PathLike, preview_directory: str | os.PathLike | None = None, factors=()
    ) -> list[Path]:
        """`directory/<name>.npy` (float32, the photo's resolution, 0 = no depth), `<name>.png` (16-bit, value x
        1e-3 = depth), colour previews in `preview_directory`, and 16-bit copies at 1 / f in `<directory>_<f>/`."""
        depths = (self.original_depth(i) for i in range(self.num_frames))  # one full-size map at a time
        return write_depth_maps(directory, self.image_names, depths, preview_directory, factors)

    def mask(self, index: int, threshold: float) -> np.ndarray:
        """[height, width] uint8 mask of photo `index`: 255 where the depth exists, its confidence is at least
        `threshold` and the pixel is not background (when the selection masks background), else 0."""
        transform = self.transforms[index]
        keep = self.original_depth(index) > 0
        keep &= depth_at_original_resolution(np.asarray(self.depth_conf[index]), transform) >= threshold
        selection = self.selection
        if selection.mask_black_background or selection.mask_white_background:
            colors = self.predictions.images[index].transpose(1, 2, 0)[None]
            background = background_pixels(colors, selection.mask_black_background, selection.mask_white_background)
            keep &= depth_at_original_resolution(background[0].astype(np.float32), transform) == 0
        return np.where(keep, 255, 0).astype(np.uint8)

    def mask_threshold(self) -> float:
        """The confidence below which `mask` drops pixels: the selection's percentile over the photos' pixels."""
        percentile = self.selection.conf_percentile
        conf = np.asarray(self.depth_conf)
        values = conf[on_photo_mask(self.transforms, conf.shape[1:]) & np.isfinite(conf)]
        return float(np.percentile(values, percentile)) if len(values) and percentile > 0 else -np.inf

    def save_masks(self, directory: str | os.PathLike, factors=()) -> Path:
        """`directory/<name>.png` (`mask`, at the photo's resolution) and copies at 1 / f in `<directory>_<f>/`."""
        directory = Path(directory)
        threshold = self.mask_threshold()
        for index, stem in enumerate(self.depth_file_stems()):
            write_scaled_maps(directory.parent, directory.name, f"{stem}.png", self.mask(index, threshold), factors)
        return directory

    def to_transforms_json(self, path: str | os.PathLike) -> Path:
        """nerfstudio's transforms.json (`vggt.export.trainer`), naming the 16-bit depth PNGs (and the masks)."""
        stems = self.depth_file_stems()
        masks = [f"{MASKS_DIR}/{stem}.png" for stem in stems] if self.export.masks else None
        depth = [f"{DEPTH_DIR}/{stem}.png" for stem in stems]
        return write_transforms_json(path, self.cameras, self.export.camera_model, self.export.shared_camera, depth,
                                     masks)  # fmt: skip

    def save_predictions(self, path: str | os.PathLike) -> Path:
        """predictions.npz: the raw feed-forward outputs, their decoded cameras at the model resolution
        (`extrinsic`, `intrinsic`), the model input `images` (uint8 [S, 3, H, W]), the image names, the photos'
        sizes `image_wh` [S, 2] (width, height) and `input_from_original` [S, 3, 3], the preprocessing of each
        photo (model-input pixel = matrix @ original pixel), the cameras of cameras.json on the model grid
        (`model_extrinsic`, `model_intrinsic`: bundle-adjusted after --ba), `given_poses` (the number of photos whose
        pose was given) and what `load` needs to rebuild the cloud (`vggt.pipeline.saved`)."""
        path = Path(path)
        arrays = {key: finite_or_zero(value) for key, value in self.predictions.arrays().items()}
        np.savez(
            path,
            **arrays,
            image_names=np.array(self.image_names),
            **transform_arrays(self.transforms),
            **cloud_arrays(
                self.selection,
                self.points_source,
                self.model_intrinsics,
                self.sparse,
                self.seconds,
                self.extrinsics,
            ),
            **export_arrays(self.export),
            given_poses=np.array(self.given_poses),
        )
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
        check_output_folder(directory, overwrite, sources)
        factors = DOWNSCALE_FACTORS if self.export.downscaled_images else ()
        steps = [
            ("COLMAP model", lambda out: self.to_colmap(out, copy_images=False)),
            ("COLMAP model", lambda out: verify_colmap_output(out, self, directory)),
            ("images", lambda out: self.copy_images(out / IMAGES_DIR)),
            ("downscaled images", lambda out: write_downscaled_images(out / IMAGES_DIR, self.image_names, factors)),
            ("point cloud", lambda out: self.to_ply(out / PLY_FILE)),
            ("GLB scene", lambda out: self.to_glb(out / GLB_FILE)),
            ("depth maps", lambda out: self.save_depth(out / DEPTH_DIR, out / DEPTH_PREVIEW_DIR, factors)),
            ("masks", lambda out: self.save_masks(out / MASKS_DIR, factors) if self.export.masks else None),
            ("cameras", lambda out: self.to_cameras_json(out / CAMERAS_FILE)),
            ("nerfstudio cameras", lambda out: self.to_transforms_json(out / TRANSFORMS_FILE)),
            ("predictions", lambda out: self.save_predictions(out / PREDICTIONS_FILE)),
        ]
        with atomic_directory(directory, overwrite=overwrite) as staging:
            with tqdm(steps, desc="export", unit="file", disable=not progress) as bar:
                for label, write in bar:
                    bar.set_postfix_str(label)
                    try:
                        write(staging)
                    except OSError as err:  # disk full, file-size limit, permissions...
                        raise OutputError(
                            "could not write the {label} into {path}: {error}; nothing was kept",
                            label=label,
                            path=directory,
                            error=err,
                        ) from None
            verify_reconstruction(staging, self, directory)
        return directory

    def summary(self, directory: str | os.PathLike | None = None, seconds: float | None = None) -> str:
        """One line: frames, points kept, time (default: of `reconstruct`), and where the outputs went."""
        where = f", written to {directory}" if directory is not None else ""
        ba = ", bundle adjusted" if self.bundle_adjusted else ""
        masked = f", {self.masked_pixels} non-finite pixels masked" if self.masked_pixels else ""
        seconds = self.seconds if seconds is None else seconds
        frames = f"{self.num_frames} frame{'' if self.num_frames == 1 else 's'}"
        if self.windows is not None:
            frames += f" ({self.windows})"
        points = f"{self.num_points} point{'' if self.num_points == 1 else 's'} (from {self.points_source}{ba}{masked})"
        scale = "metric scale" if self.predictions.metric else "up to scale"
        if self.given_poses:
            scale = f"in the frame and units of {self.given_poses} given poses"
        return f"{frames}, {points}, {scale}, in {seconds:.1f} s{where}"


def copy_image(source: Path, target: Path) -> bool:
    """Put at `target` the pixels the model saw of `source`: the file itself when it holds them (8-bit RGB,
    upright), else those pixels re-encoded losslessly (EXIF-rotated, palette, 16-bit, CMYK, alpha...): in the
    file's own format where it can store them exactly, else as PNG data under the same name (a JPEG cannot hold
    them exactly; readers that go by content, as Pillow, OpenCV, COLMAP and browsers do, read it).

    Returns whether the target holds PNG data under another format's name.
    """
    from PIL import Image

    if is_upright_rgb_file(source):
        shutil.copyfile(source, target)
        return False
    with Image.open(source) as image:
        image_format = image.format
    rgb = read_image_rgb(source)
    if image_format in LOSSLESS_SAVE_OPTIONS:
        rgb.save(target, format=image_format, **LOSSLESS_SAVE_OPTIONS[image_format])
        return False
    rgb.save(target, format="PNG")
    return True
