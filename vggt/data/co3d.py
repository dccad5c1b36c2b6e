"""Co3Dv2 read in its published layout, as `Scene`s: no conversion step.

The layout (the category archives unpacked into one root):

    <root>/<category>/frame_annotations.jgz          gzip JSON list, one entry per frame: sequence_name,
                                                     frame_number, image {path, size [H, W]}, depth {path,
                                                     scale_adjustment, mask_path}, viewpoint {R, T, focal_length,
                                                     principal_point, intrinsics_format}; paths relative to <root>
    <root>/<category>/sequence_annotations.jgz       per sequence (not needed here)
    <root>/<category>/set_lists/set_lists_<name>.json  {"train" | "val" | "test": [[sequence, frame, path], ...]}
    <root>/<category>/<sequence>/images/frame000001.jpg
    <root>/<category>/<sequence>/depths/frame000001.jpg.geometric.png   16-bit PNG whose bits are float16 depth,
                                                     times the frame's depth.scale_adjustment
    <root>/<category>/<sequence>/depth_masks/frame000001.png            non-zero where the depth is reliable

Cameras are PyTorch3D's: a world point (row vector) maps to the view as X_world @ R + T, with +X left, +Y up,
+Z forward, and focal length / principal point in NDC. "ndc_norm_image_bounds" scales NDC by half the image
size per axis, "ndc_isotropic" by half the shorter side; NDC +-1 are the image's edges, so pixel centres sit at
half-integers, and the principal point moves by -0.5 into this package's convention (pixel centres at integers).
The OpenCV camera-from-world is R_cv = diag(-1, -1, 1) R^T, t_cv = diag(-1, -1, 1) T.

One sequence is one `Scene` named `<category>_<sequence>`, frames in frame_number order.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vggt.data.scene import Frame, Scene
from vggt.errors import SceneFormatError

FRAME_ANNOTATIONS = "frame_annotations.jgz"
SET_LISTS_DIR = "set_lists"
INTRINSICS_FORMATS = ("ndc_norm_image_bounds", "ndc_isotropic")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
_PYTORCH3D_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Co3dSequence(Scene):
    """A `Scene` whose depth PNGs hold float16 bits, scaled per frame by `depth_scale_adjustments` [S]."""

    depth_scale_adjustments: np.ndarray | None = None

    def read_frame(self, index: int, with_depth: bool = True, with_mask: bool = True) -> Frame:
        frame = super().read_frame(index, with_depth=False, with_mask=with_mask)
        if with_depth and self.depth_paths is not None:
            scale = 1.0 if self.depth_scale_adjustments is None else float(self.depth_scale_adjustments[index])
            frame.depth = _fit(read_depth_png(self.depth_paths[index], scale, self.name), frame.image.shape[:2])
        if frame.mask is not None:
            frame.mask = _fit(frame.mask, frame.image.shape[:2])
        return frame


def read_depth_png(path: Path, scale_adjustment: float = 1.0, scene_name: str = "?") -> np.ndarray:
    """A Co3D depth PNG (16-bit, the bits of float16 values) times `scale_adjustment`, as [H, W] float32 in the
    cameras' units (0 = unknown)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode = image.mode
            bits = np.array(image, dtype=np.uint16)
    except OSError as error:
        raise SceneFormatError(
            "Co3D sequence {name!r}: cannot read {path}: {error}", name=scene_name, path=path, error=error
        ) from None
    if mode not in SIXTEEN_BIT_MODES:
        raise SceneFormatError(
            "Co3D sequence {name!r}: {path} is not a 16-bit depth PNG (mode {mode})",
            name=scene_name,
            path=path,
            mode=mode,
        )
    depth = np.frombuffer(bits.tobytes(), dtype=np.float16).reshape(bits.shape).astype(np.float32) * scale_adjustment
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0)).astype(np.float32)


def _fit(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """[h, w] depth or mask resized to [H, W] by nearest neighbour (Co3D's depth may be smaller than its image)."""
    if array.shape == tuple(hw):
        return array
    rows = np.minimum((np.arange(hw[0]) + 0.5) * array.shape[0] / hw[0], array.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(hw[1]) + 0.5) * array.shape[1] / hw[1], array.shape[1] - 1).astype(int)
    return array[rows[:, None], cols[None, :]]


def opencv_camera(viewpoint: dict[str, Any], image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A PyTorch3D viewpoint annotation as (intrinsic [3, 3] in pixels, extrinsic [3, 4] camera-from-world), OpenCV.

    image_hw: the annotated image size (height, width) that the NDC values refer to.
    """
    fmt = str(viewpoint.get("intrinsics_format", "ndc_norm_image_bounds")).lower()
    if fmt not in INTRINSICS_FORMATS:
        raise ValueError(f"intrinsics_format must be one of {INTRINSICS_FORMATS}, got {fmt!r}")
    half_wh = np.array([image_hw[1], image_hw[0]], dtype=np.float64) / 2.0
    rescale = half_wh if fmt == "ndc_norm_image_bounds" else np.full(2, half_wh.min())
    focal = np.broadcast_to(np.asarray(viewpoint["focal_length"], dtype=np.float64), (2,)) * rescale
    principal = half_wh - np.asarray(viewpoint["principal_point"], dtype=np.float64).reshape(2) * rescale - 0.5
    intrinsic = np.array([[focal[0], 0.0, principal[0]], [0.0, focal[1], principal[1]], [0.0, 0.0, 1.0]])
    rotation = np.asarray(viewpoint["R"], dtype=np.float64).reshape(3, 3)
    translation = np.asarray(viewpoint["T"], dtype=np.float64).reshape(3)
    extrinsic = np.hstack([_PYTORCH3D_TO_OPENCV @ rotation.T, (_PYTORCH3D_TO_OPENCV @ translation)[:, None]])
    return intrinsic, extrinsic


def _read_jgz(path: Path) -> Any:
    """A gzip JSON file (Co3D's .jgz), parsed."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        raise SceneFormatError(
            "Co3D category {category!r}: {path} is missing", category=path.parent.name, path=path
        ) from None
    except (OSError, EOFError, ValueError) as error:
        raise SceneFormatError("Co3D {path} is not gzip JSON: {error}", path=path, error=error) from None


def _subset_frames(category_dir: Path, subset: str, split: str) -> set[tuple[str, int]]:
    """(sequence, frame_number) pairs of `split` in set_lists/set_lists_<subset>.json."""
    path = category_dir / SET_LISTS_DIR / f"set_lists_{subset}.json"
    if not path.is_file():
        raise SceneFormatError("Co3D category {category!r}: {path} is missing", category=category_dir.name, path=path)
    try:
        entries = json.loads(path.read_text())[split]
        return {(str(entry[0]), int(entry[1])) for entry in entries}
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise SceneFormatError(
            "Co3D {path}: no list of [sequence, frame, path] under {split!r} ({error})",
            path=path,
            split=split,
            error=repr(error),
        ) from None


def _sequence(root: Path, category: str, name: str, annotations: list[dict[str, Any]]) -> Co3dSequence:
    """One sequence's frame annotations (any order) as a Scene."""
    scene_name = f"{category}_{name}"
    annotations = sorted(annotations, key=lambda a: int(a["frame_number"]))
    intrinsics, extrinsics, image_hw, image_paths, depth_paths, mask_paths, scales = [], [], [], [], [], [], []
    for entry in annotations:
        try:
            hw = (int(entry["image"]["size"][0]), int(entry["image"]["size"][1]))
            intrinsic, extrinsic = opencv_camera(entry["viewpoint"], hw)
            image_paths.append(root / entry["image"]["path"])
            depth = entry.get("depth") or {}
            depth_paths.append(root / depth["path"] if depth.get("path") else None)
            mask_paths.append(root / depth["mask_path"] if depth.get("mask_path") else None)
            scales.append(float(depth.get("scale_adjustment") or 1.0))
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise SceneFormatError(
                "Co3D sequence {name!r}, frame {frame}: bad annotation ({error})",
                name=scene_name,
                frame=entry.get("frame_number"),
                error=repr(error),
            ) from None
        intrinsics.append(intrinsic)
        extrinsics.append(extrinsic)
        image_hw.append(hw)
    if not image_paths[0].is_file():
        raise SceneFormatError("Co3D sequence {name!r}: {path} is missing", name=scene_name, path=image_paths[0])
    with_depth = all(path is not None and path.is_file() for path in depth_paths)
    with_masks = with_depth and all(path is not None and path.is_file() for path in mask_paths)
    return Co3dSequence(
        name=scene_name,
        image_names=[path.name for path in image_paths],
        intrinsics=np.stack(intrinsics),
        extrinsics=np.stack(extrinsics),
        image_hw=np.array(image_hw),
        image_paths=image_paths,
        depth_paths=depth_paths if with_depth else None,
        mask_paths=mask_paths if with_masks else None,
        depth_scale_adjustments=np.array(scales),
    )


def read_category(root: Path, category: str, subset: str | None = None, split: str = "train") -> list[Co3dSequence]:
    """The sequences of `<root>/<category>` (only the frames of set list `subset`'s `split`, when given)."""
    annotations = _read_jgz(root / category / FRAME_ANNOTATIONS)
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise SceneFormatError(
            "Co3D {path}: expected a JSON list of frame annotations", path=root / category / FRAME_ANNOTATIONS
        )
    keep = _subset_frames(root / category, subset, split) if subset else None
    by_sequence: dict[str, list[dict[str, Any]]] = {}
    for entry in annotations:
        if "sequence_name" not in entry or "frame_number" not in entry:
            raise SceneFormatError(
                "Co3D {path}: an annotation lacks sequence_name or frame_number",
                path=root / category / FRAME_ANNOTATIONS,
            )
        if keep is None or (str(entry["sequence_name"]), int(entry["frame_number"])) in keep:
            by_sequence.setdefault(str(entry["sequence_name"]), []).append(entry)
    return [_sequence(root, category, name, by_sequence[name]) for name in sorted(by_sequence)]


def list_sequences(
    root: Path | str, categories: list[str] | None = None, subset: str | None = None, split: str = "train"
) -> list[Co3dSequence]:
    """Every sequence under a Co3Dv2 root (of `categories` only, when given), sorted by category then name.

    subset: a set list name (e.g. `fewview_train` for set_lists/set_lists_fewview_train.json): only its `split`
        frames are read.
    """
    root = Path(root)
    found = sorted(path.parent.name for path in root.glob(f"*/{FRAME_ANNOTATIONS}"))
    if categories is not None:
        missing = sorted(set(categories) - set(found))
        if missing:
            raise SceneFormatError(
                "{root} holds no Co3D category {missing} (<root>/<category>/{file})",
                root=root,
                missing=missing,
                file=FRAME_ANNOTATIONS,
            )
        found = [category for category in found if category in set(categories)]
    sequences = [sequence for category in found for sequence in read_category(root, category, subset, split)]
    if not sequences:
        raise SceneFormatError(
            "{root} holds no Co3D sequence (<root>/<category>/{file})", root=root, file=FRAME_ANNOTATIONS
        )
    return sequences
