"""Windowed reconstruction of long sequences (`window=`, `overlap=`; `--window W --overlap K`).

The frames are cut into windows of W frames, each sharing K with the one before (`vggt.utils.windows`); each
window is one forward pass, written to disk as soon as it is done (`WindowStore`), so that neither the device nor
the host holds more than one window of predictions, and an interrupted run resumes from the windows on disk. Each
window is then aligned to the one before by a robust similarity fitted on the shared frames' depth-unprojected
points (`link_from_shared_frames`, IRLS with Cauchy weights: docs/long_sequences.md), the chain of links puts
every camera and point in the first camera's frame, and an optional loop window (the frames before a named late
frame with those after the early frame it revisits; by default the last frames with the first ones) closes the
loop through a pose graph. The merged predictions are memory-mapped arrays in the work folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vggt.data.intrinsics import KnownIntrinsics
from vggt.errors import InputError, OutputError
from vggt.pipeline.calibration import apply_known_intrinsics
from vggt.pipeline.family import conditioning_inputs, takes_conditioning
from vggt.pipeline.inference import InferenceOptions, Predictions, check_finite, run_inference
from vggt.pipeline.inputs import load_input_images
from vggt.pipeline.resume import manifest_changes, windows_manifest
from vggt.pipeline.saved import TRANSFORM_KEYS, rebuild_transforms, transform_arrays
from vggt.utils.files import atomic_directory, atomic_file
from vggt.utils.geometry import depth_map_to_world_points
from vggt.utils.images import image_size_upright
from vggt.utils.load_fn import PreprocessTransform, input_size, rescale_intrinsics_to_input
from vggt.utils.locks import output_lock
from vggt.utils.pose_enc import extri_intri_to_pose_encoding
from vggt.utils.pose_graph import SimilarityEdge, chain_similarities, optimize_pose_graph
from vggt.utils.similarity import Similarity
from vggt.utils.windows import link_from_shared_frames, loop_window, shared_frames, window_ranges

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
WINDOW_DIR = "window_{:05d}"
MERGED_DIR = "merged"
# Free space below which a failed write is put down to a full disk.
FULL_DISK_BYTES = 1 << 20
# The arrays of a window, as Predictions fields; those a model does not predict are absent.
ARRAY_FIELDS = (
    "images",
    "pose_enc",
    "extrinsics",
    "intrinsics",
    "depth",
    "depth_conf",
    "world_points",
    "world_points_conf",
    "metric_scale",  # per window, not per frame: a metric model's (Pi3X) scale
)


@dataclass(frozen=True)
class WindowPlan:
    """The frames of each forward pass: the windows in order, then the loop window (if any), and the two windows
    the loop window is linked to (the one sharing most frames with its late side, then with its early side)."""

    windows: list[list[int]]
    loop: list[int] | None = None
    loop_links: tuple[int, int] | None = None

    @classmethod
    def build(cls, num_frames: int, window: int, overlap: int, loop_closure: bool | tuple[int, int]) -> WindowPlan:
        windows = [list(r) for r in window_ranges(num_frames, window, overlap)]
        if isinstance(loop_closure, tuple) and max(loop_closure) >= num_frames:
            raise InputError(
                "{loop_closure} names frame {frame} of a sequence of {count} frames (positions 0 to {last})",
                frame=max(loop_closure),
                count=num_frames,
                last=num_frames - 1,
            )
        if not loop_closure or len(windows) < 2:
            return cls(windows)
        loop = loop_window(num_frames, window, None if loop_closure is True else loop_closure)
        late_side, early_side = set(loop[: window - window // 2]), set(loop[window - window // 2 :])
        shared = [(len(late_side & set(w)), len(early_side & set(w))) for w in windows]
        # Ties: the later window for the late side, the earlier one for the early side.
        to_late = max(range(len(windows)), key=lambda k: (shared[k][0], k))
        to_early = max(range(len(windows)), key=lambda k: (shared[k][1], -k))
        return cls(windows, loop, (to_late, to_early))

    @property
    def passes(self) -> list[list[int]]:
        return self.windows + ([self.loop] if self.loop is not None else [])


class WindowStore:
    """Per-window predictions in `folder/window_<k>/` (one .npy per array, memory-mapped when read back, and the
    frames' preprocessing as predictions.npz stores it: `vggt.pipeline.saved.transform_arrays`), written
    atomically so that a window folder on disk is a complete one. `manifest` (what the windows depend on:
    `vggt.pipeline.resume`) is kept in `folder/manifest.json`, written atomically: resuming with other inputs or
    options is refused naming what changed. Without `resume`, only a folder of ours (with a manifest) or an empty
    one is cleared."""

    def __init__(self, folder: Path, manifest: dict[str, Any], resume: bool) -> None:
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST_FILE
        if manifest_path.is_file() and resume:
            changes = manifest_changes(_read_manifest(manifest_path), manifest)
            if changes:
                raise InputError(
                    "the windows in {folder} are of another run ({changes} changed); drop {resume=True} to start over",
                    folder=self.folder,
                    changes=", ".join(changes),
                )
        elif manifest_path.is_file() or (self.folder.is_dir() and not any(self.folder.iterdir())):
            shutil.rmtree(self.folder)
        elif self.folder.exists():
            raise InputError(
                "{work_dir} {folder} holds files but no windows of a vggt run; choose an empty or new folder",
                folder=self.folder,
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(manifest_path) as staging:
            staging.write_text(json.dumps(manifest, indent=1))

    def path(self, index: int) -> Path:
        return self.folder / WINDOW_DIR.format(index)

    def has(self, index: int) -> bool:
        return self.path(index).is_dir()

    def save(self, index: int, predictions: Predictions, transforms: Sequence[PreprocessTransform]) -> None:
        with atomic_directory(self.path(index), overwrite=True) as staging:
            arrays = {name: getattr(predictions, name) for name in ARRAY_FIELDS}
            for name, value in {**arrays, **transform_arrays(transforms)}.items():
                if value is not None:
                    np.save(staging / f"{name}.npy", value)

    def load(self, index: int) -> tuple[Predictions, list[PreprocessTransform]]:
        folder = self.path(index)
        arrays = {
            name: np.load(folder / f"{name}.npy", mmap_mode="r")
            for name in (*ARRAY_FIELDS, *TRANSFORM_KEYS)
            if (folder / f"{name}.npy").is_file()
        }
        transforms = rebuild_transforms(arrays)
        return Predictions(**{name: arrays[name] for name in ARRAY_FIELDS if name in arrays}), transforms


def _read_manifest(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(
            "{path} cannot be read ({error}); drop {resume=True} to start over", path=path, error=error
        ) from None


@dataclass
class WindowedResult:
    """The merged predictions of all frames (memory-mapped in `work_dir`), each frame's preprocessing, the
    world-from-window similarities, and per link the alignment's median residual in world units and the fraction
    of inlier pixels. `work_dir` is the folder, or the TemporaryDirectory that deletes it."""

    predictions: Predictions
    transforms: list[PreprocessTransform]
    nodes: list[Similarity]
    residuals: list[float] = field(default_factory=list)
    inliers: list[float] = field(default_factory=list)
    work_dir: Any = None

    def summary(self) -> str:
        if not self.residuals:
            return f"{len(self.nodes)} window"
        return (
            f"{len(self.nodes)} windows, alignment residual median {np.median(self.residuals):.3g} "
            f"(max {max(self.residuals):.3g}), inliers {100 * min(self.inliers):.0f}-{100 * max(self.inliers):.0f} %"
        )


def common_input_size(paths: Sequence[Path], mode: str, resolution: int, patch_size: int) -> tuple[int, int]:
    """(width, height) every frame is padded to: the largest model input of the photos, from their headers."""
    sizes = [input_size(*image_size_upright(p), mode, resolution, patch_size) for p in paths]
    return max(w for w, _ in sizes), max(h for _, h in sizes)


def run_windows(
    model: torch.nn.Module,
    paths: Sequence[Path],
    plan: WindowPlan,
    store: WindowStore,
    mode: str,
    resolution: int,
    inference: InferenceOptions,
    model_name: str,
    known: KnownIntrinsics | None = None,
) -> None:
    """One forward pass per window of `plan`, each saved to `store` as it is done (those on disk are skipped);
    with `known` intrinsics, they replace the predicted ones (and are those the alignment unprojects with)."""
    from tqdm.auto import tqdm

    pad_to = common_input_size(paths, mode, resolution, model.config.patch_size)
    passes = plan.passes
    todo = [k for k in range(len(passes)) if not store.has(k)]
    if len(todo) < len(passes):
        logger.info("resuming: %d of %d windows are already on disk", len(passes) - len(todo), len(passes))
    for k in tqdm(todo, desc="windows", unit="window", disable=not inference.progress):
        frames = [paths[i] for i in passes[k]]
        loaded = load_input_images(frames, mode, resolution, model.config.patch_size, pad_to=pad_to)
        subset, conditioning = None, None
        if known is not None:
            subset = KnownIntrinsics(
                tuple(known.image_names[i] for i in passes[k]), tuple(known.cameras[i] for i in passes[k])
            )
            if takes_conditioning(model):  # Pi3X reads them in its network too
                on_grid = rescale_intrinsics_to_input(subset.intrinsics, loaded.transforms)
                conditioning = conditioning_inputs(on_grid, None, tuple(loaded.images.shape[-2:]))
        predictions = run_inference(model, loaded.images, inference, conditioning=conditioning)
        check_finite(predictions, model_name)
        predictions.require("extrinsics", "depth")
        if subset is not None:
            apply_known_intrinsics(predictions, subset, loaded.transforms)
        store.save(k, predictions, loaded.transforms)


def _points(predictions: Predictions, positions: np.ndarray) -> np.ndarray:
    """[K, H, W, 3] depth of frames `positions` unprojected with the window's cameras (its coordinates)."""
    return depth_map_to_world_points(
        np.asarray(predictions.depth[positions], np.float64),
        np.asarray(predictions.extrinsics[positions], np.float64),
        np.asarray(predictions.intrinsics[positions], np.float64),
    )


def _link(store: WindowStore, plan: WindowPlan, target: int, source: int):
    """The fit taking pass `source`'s coordinates into pass `target`'s, on the frames they share."""
    passes = plan.passes
    (first, _), (second, _) = store.load(target), store.load(source)
    in_first, in_second = shared_frames(passes[target], passes[source])
    return link_from_shared_frames(
        _points(first, in_first),
        _points(second, in_second),
        np.asarray(first.depth_conf[in_first]),
        np.asarray(second.depth_conf[in_second]),
    )


def align_windows(store: WindowStore, plan: WindowPlan) -> tuple[list[Similarity], list[float], list[float]]:
    """World-from-window similarities (world = the frame of the sequence's first camera), and per link its
    median residual in world units and the fraction of pixels the robust fit kept (weight above half)."""
    fits = [_link(store, plan, k - 1, k) for k in range(1, len(plan.windows))]
    first_camera = np.asarray(store.load(0)[0].extrinsics[0], np.float64)
    nodes = chain_similarities([fit.similarity for fit in fits], first=Similarity.from_camera(first_camera))
    residuals = [float(np.median(fit.residuals)) * nodes[k].scale for k, fit in enumerate(fits)]
    inliers = [float(np.mean(fit.weights > 0.5 * np.median(fit.weights))) for fit in fits]
    if plan.loop is not None:
        loop, (late, early) = len(plan.windows), plan.loop_links
        to_late, to_early = _link(store, plan, late, loop), _link(store, plan, early, loop)
        edges = [SimilarityEdge(k, k + 1, fit.similarity) for k, fit in enumerate(fits)]
        edges += [SimilarityEdge(late, loop, to_late.similarity), SimilarityEdge(early, loop, to_early.similarity)]
        nodes = optimize_pose_graph([*nodes, nodes[late] @ to_late.similarity], edges).nodes[:-1]
    return nodes, residuals, inliers


def merge_windows(
    store: WindowStore, plan: WindowPlan, nodes: Sequence[Similarity], num_frames: int
) -> tuple[Predictions, list[PreprocessTransform]]:
    """All frames' predictions in the world frame, as memory-mapped arrays in `store.folder/merged/`: each frame
    from the first window that holds it, its cameras and points moved by the window's similarity and its depth
    scaled by it."""
    folder = store.folder / MERGED_DIR
    folder.mkdir(exist_ok=True)
    merged: dict[str, np.ndarray] = {}
    transforms: list[PreprocessTransform | None] = [None] * num_frames
    for k, frames in enumerate(plan.windows):
        predictions, window_transforms = store.load(k)
        node = nodes[k]
        for j, frame in enumerate(frames):
            if transforms[frame] is not None:
                continue  # held by an earlier window
            transforms[frame] = window_transforms[j]
            for name, value in _frame_in_world(predictions, j, node).items():
                if name not in merged:
                    merged[name] = np.lib.format.open_memmap(
                        folder / f"{name}.npy", mode="w+", dtype=value.dtype, shape=(num_frames, *value.shape)
                    )
                merged[name][frame] = value
    predictions = Predictions(**merged)
    # Every window is moved into the first one's frame and scale: metric if the first window is.
    predictions.metric_scale = store.load(0)[0].metric_scale
    height, width = predictions.input_hw
    pose_enc = extri_intri_to_pose_encoding(
        torch.from_numpy(np.asarray(predictions.extrinsics))[None],
        torch.from_numpy(np.asarray(predictions.intrinsics))[None],
        (height, width),
    )
    predictions.pose_enc = pose_enc[0].numpy().astype(np.float32)
    return predictions, transforms


def _frame_in_world(predictions: Predictions, j: int, node: Similarity) -> dict[str, np.ndarray]:
    """Frame j of a window's predictions moved into the world by `node`."""
    values = {
        "images": np.asarray(predictions.images[j]),
        "extrinsics": node.apply_to_extrinsics(np.asarray(predictions.extrinsics[j], np.float64)).astype(np.float32),
        "intrinsics": np.asarray(predictions.intrinsics[j]),
        "depth": (np.asarray(predictions.depth[j]) * node.scale).astype(np.float32),
        "depth_conf": np.asarray(predictions.depth_conf[j]),
    }
    if predictions.world_points is not None:
        values["world_points"] = node.apply(np.asarray(predictions.world_points[j], np.float64)).astype(np.float32)
        values["world_points_conf"] = np.asarray(predictions.world_points_conf[j])
    return values


def write_failure_cause(folder: Path, error: OSError) -> str:
    """Why writing into `folder` failed, in words: numpy's writers report only the bytes they wrote."""
    import resource

    if shutil.disk_usage(folder).free < FULL_DISK_BYTES:
        return f"the disk is full: {error}"
    if error.strerror:
        return error.strerror
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return f"a file reached the size limit of this process (ulimit -f): {error}"
    return str(error)


def predict_windowed(
    model: torch.nn.Module,
    paths: Sequence[Path],
    opts: Any,
    inference: InferenceOptions,
    resolution: int,
    model_name: str,
    known: KnownIntrinsics | None = None,
    video: Path | None = None,
) -> WindowedResult:
    """Predictions for all frames of `paths`, one forward pass per window of `opts` (ReconstructOptions: window,
    overlap, loop_closure, work_dir, resume), aligned into the first camera's frame. `video`: the file the frames
    were sampled from (what a resumed run must match instead of the frames' temporary folder)."""
    work = Path(opts.work_dir) if opts.work_dir is not None else None
    holder = None
    if work is None:
        holder = tempfile.TemporaryDirectory(prefix="vggt-windows-")
        work = Path(holder.name)
    plan = WindowPlan.build(len(paths), opts.window, opts.overlap, opts.loop_closure)
    with output_lock(work):  # one run at a time per work folder
        store = WindowStore(work, windows_manifest(paths, opts, resolution, model_name, video), resume=opts.resume)
        try:
            run_windows(model, paths, plan, store, opts.mode, resolution, inference, model_name, known)
            nodes, residuals, inliers = align_windows(store, plan)
            predictions, transforms = merge_windows(store, plan, nodes, len(paths))
        except OSError as error:  # disk full, file size limit: say where and why, and what is kept
            raise OutputError(
                "could not write the windows into {folder} ({cause}); the windows already written are kept there for "
                "{resume=True}",
                folder=work,
                cause=write_failure_cause(work, error),
            ) from None
    return WindowedResult(predictions, transforms, nodes, residuals, inliers, holder or work)
