"""`ReconstructOptions`: every choice of `vggt.reconstruct`, validated once; importable without torch.

The command line builds the same object from its flags (each flag's destination is a field name), so the
library and `vggt reconstruct` accept and refuse exactly the same things, each in its own vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from vggt.errors import InputError
from vggt.export.colmap import DEFAULT_CAMERA_MODEL, check_camera_model
from vggt.models.config import DEFAULT_CHECKPOINT
from vggt.utils.device import DEVICE_CHOICES, DTYPE_CHOICES

__all__ = ["DEFAULT_CHECKPOINT", "DEVICE_CHOICES", "DTYPE_CHOICES", "ExportOptions", "ReconstructOptions"]

POINT_SOURCES = ("depth", "pointmap")
MODES = ("crop", "pad")
# Drop the least confident half of the pixels by default (as the reference's demo does).
DEFAULT_CONF_PERCENTILE = 50.0
DEFAULT_MAX_POINTS = 500_000
# Frames a window shares with the one before when `overlap` is not given: a quarter of the window (at least 1).
DEFAULT_OVERLAP_FRACTION = 0.25
# The filters of `vggt.ba.refine_with_ba` that decide which tracks bundle adjustment keeps (keys of `ba_options`;
# the command's --ba-* flags).
TRACK_FILTER_OPTIONS = ("vis_threshold", "conf_threshold", "max_reproj_error")
# Bundle adjusters: COLMAP's (Ceres, through pycolmap) and the differentiable one (Theseus, the `ba` extra).
BA_BACKENDS = ("theseus", "ceres")


def default_overlap(window: int) -> int:
    return max(1, int(window * DEFAULT_OVERLAP_FRACTION))


@dataclass(frozen=True)
class ExportOptions:
    """How a reconstruction's folder is written (`Reconstruction.save`), besides its contents.

    Attributes:
        camera_model: COLMAP model of the cameras everywhere (PINHOLE or SIMPLE_PINHOLE).
        shared_camera: one camera (the same intrinsics) for all frames, in the COLMAP model and cameras.json.
        colmap_points: the COLMAP model holds points with multi-view tracks; False writes cameras and images
            only (for `colmap point_triangulator` or COLMAP's MVS on a database of its own).
        masks: write `masks/<stem>.png` (255 = confident foreground pixel, 0 = low confidence or background).
        downscaled_images: write `images_2/`, `images_4/`, `images_8/` (and `depth_N/`, `masks_N/`) for trainers.
    """

    camera_model: str = DEFAULT_CAMERA_MODEL
    shared_camera: bool = False
    colmap_points: bool = True
    masks: bool = False
    downscaled_images: bool = True

    def __post_init__(self) -> None:
        check_camera_model(self.camera_model)


@dataclass(frozen=True)
class ReconstructOptions:
    """How to reconstruct. See `vggt.reconstruct` for what each field does.

    Attributes:
        model_name: a model of the registry (`vggt.models.list_models`, or a small random preset such as
            `pi3-tiny`); None: VGGT (`checkpoint` / `preset`).
        checkpoint: Hub id, folder or weights file; None: the model's released weights (facebook/VGGT-1B), or
            random weights if only `preset` (or a small preset's name).
        preset: VGGT architecture preset (`tiny`, `vggt-1b`).
        device, dtype: "auto" or explicit (`cpu`, `cuda`, `cuda:N`, `mps`; `float32`, `bfloat16`, `float16`).
        mode: "crop" or "pad". resolution: model input width (crop) or longer side (pad); None: the model's
            training resolution (`VGGTConfig.default_resolution`).
        points: "depth" or "pointmap". conf_percentile: drop the least confident X % of pixels.
        max_points: at most this many points (seeded random subset); None: no limit.
        chunk_size: frames per chunk of the streaming pass (patch encoder, frame-wise blocks, heads); None: the
            automatic choice for the device. offload: keep the aggregator outputs in CPU memory (pinned on CUDA)
            and stream them back to the heads chunk by chunk (for thousands of frames on a GPU).
        processes: local processes that share the forward pass, each with its run of frames (sequence
            parallelism, exact); under torchrun the job's ranks share it instead.
        merge_ratio: the fast mode (training-free token merging in global attention, `vggt.runtime.token_merging`):
            this fraction, at most 0.5, of every frame's patch tokens but the first frame's is merged; 0 is exact.
        fps, max_frames: frame sampling of a video; max_frames also thins out images.
        bundle_adjust: refine by bundle adjustment; ba_options: keywords of `vggt.ba.refine_with_ba`.
        intrinsics: a file of known intrinsics (JSON, COLMAP cameras or model; `vggt.data.intrinsics`) used instead
            of the predicted ones (Pi3X also reads them in its network); refine_intrinsics: let bundle adjustment
            refine them (default: fixed).
        depth: a folder of known depth maps, `<photo stem>.npy` (float32 at the photo's size, 0 where unknown),
            that Pi3X reads in its network (other models refuse it). poses: a file of known camera poses (JSON
            camera-to-world or world-to-camera, COLMAP images.txt/.bin or model; `vggt.data.poses`) for some or all
            photos: Pi3X reads them in its network, and for every model the outputs are moved into the poses'
            frame and units with the posed photos' cameras exactly as given (`vggt.pipeline.calibration`).
        window, overlap: windowed reconstruction of long sequences: one forward pass per `window` frames, each
            sharing `overlap` frames with the one before (None: one pass over all frames); loop_closure: True, the
            last frames revisit the first ones, or (early, late), frame `late` revisits frame `early` (0-based
            positions in the sequence); one more pass links the two sides; work_dir: where the windows are kept
            (default: a temporary folder); resume: reuse the windows already in `work_dir`.
        memory_check: stop with advice when the estimate exceeds free memory. progress: tqdm bars.
        camera_model, colmap_points, masks, downscaled_images: see `ExportOptions`. shared_camera: one camera for
            all frames (None: for a video, whose frames come from one device; not for photos).
        ba_backend: "theseus" (differentiable, the `ba` extra) or "ceres" (COLMAP's bundle adjuster, pycolmap).
    """

    model_name: str | None = None
    checkpoint: str | None = None
    preset: str | None = None
    device: Any = "auto"
    dtype: Any = "auto"
    mode: str = "crop"
    resolution: int | None = None
    points: str = "depth"
    conf_percentile: float = DEFAULT_CONF_PERCENTILE
    max_points: int | None = DEFAULT_MAX_POINTS
    chunk_size: int | None = None
    offload: bool = False
    processes: int = 1
    merge_ratio: float = 0.0
    fps: float | None = None
    max_frames: int | None = None
    bundle_adjust: bool = False
    ba_options: Mapping[str, Any] = field(default_factory=dict)
    intrinsics: str | os.PathLike | None = None
    refine_intrinsics: bool = False
    depth: str | os.PathLike | None = None
    poses: str | os.PathLike | None = None
    window: int | None = None
    overlap: int | None = None
    loop_closure: bool | tuple[int, int] = False
    work_dir: str | os.PathLike | None = None
    resume: bool = False
    memory_check: bool = True
    progress: bool = False
    camera_model: str = DEFAULT_CAMERA_MODEL
    shared_camera: bool | None = None
    colmap_points: bool = True
    masks: bool = False
    downscaled_images: bool = True
    ba_backend: str = "theseus"

    def __post_init__(self) -> None:
        check_camera_model(self.camera_model)
        if self.ba_backend not in BA_BACKENDS:
            raise InputError(
                "unknown {ba_backend} {value!r}; choose one of {choices}",
                value=self.ba_backend,
                choices=", ".join(BA_BACKENDS),
            )
        if self.points not in POINT_SOURCES:
            raise InputError(
                "unknown {points} source {value!r}; choose one of {choices}",
                value=self.points,
                choices=", ".join(POINT_SOURCES),
            )
        if self.mode not in MODES:
            raise InputError(
                "unknown {mode} {value!r}; choose one of {choices}", value=self.mode, choices=", ".join(MODES)
            )
        if not 0 <= self.conf_percentile < 100:
            raise InputError("{conf_percentile} must be in [0, 100), got {value}", value=self.conf_percentile)
        for name in ("max_points", "chunk_size", "max_frames", "resolution", "processes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError("{" + name + "} must be at least 1, got {value}", value=value)
        if self.fps is not None and not self.fps > 0:
            raise InputError("{fps} must be positive, got {value}", value=self.fps)
        self._check_fast_mode()
        if self.ba_options is None:
            object.__setattr__(self, "ba_options", {})
        self._check_windows()

    def _check_fast_mode(self) -> None:
        from vggt.runtime.token_merging import check_merge_ratio  # (imports torch: only when options are made)

        check_merge_ratio(self.merge_ratio)
        if self.merge_ratio > 0 and self.processes > 1:
            raise InputError("{merge_ratio} (the fast mode) runs in one process; drop {processes}")

    def _check_windows(self) -> None:
        if self.window is None:
            for name in ("overlap", "loop_closure", "resume"):
                if getattr(self, name):
                    raise InputError("{" + name + "} applies to windowed runs: set {window} too")
            return
        if self.window < 2:
            raise InputError("{window} must be at least 2 frames, got {value}", value=self.window)
        overlap = self.overlap if self.overlap is not None else default_overlap(self.window)
        if not 1 <= overlap < self.window:
            raise InputError(
                "{overlap} must be at least 1 and below {window} ({size}), got {value}", size=self.window, value=overlap
            )
        object.__setattr__(self, "overlap", overlap)
        self._check_loop()
        if self.bundle_adjust:
            raise InputError(
                "{bundle_adjust} works on one forward pass; it cannot be combined with {window} (drop one of them)"
            )
        if self.processes > 1:
            raise InputError("{window} bounds the memory already; it is not combined with {processes} > 1")

    def _check_loop(self) -> None:
        if isinstance(self.loop_closure, bool):
            return
        frames = tuple(self.loop_closure) if isinstance(self.loop_closure, (tuple, list)) else ()
        if len(frames) != 2 or not all(isinstance(f, int) and not isinstance(f, bool) for f in frames):
            raise InputError("{loop_closure} is True or two frame positions (early, late), got {value}",
                             value=self.loop_closure)  # fmt: skip
        if not 0 <= frames[0] < frames[1]:
            raise InputError("{loop_closure} needs 0 <= early < late, got {value}", value=frames)
        object.__setattr__(self, "loop_closure", frames)

    def export_options(self, is_video: bool) -> ExportOptions:
        """The `ExportOptions` of these options; `shared_camera` None means: shared for a video."""
        shared = is_video if self.shared_camera is None else self.shared_camera
        return ExportOptions(self.camera_model, shared, self.colmap_points, self.masks, self.downscaled_images)

    @property
    def windowed(self) -> bool:
        return self.window is not None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
