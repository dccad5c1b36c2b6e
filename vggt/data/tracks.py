"""Ground-truth point tracks of a scene: the optional `tracks.npz` of a scene folder (docs/dataset_format.md).

N points, each asked for ("queried") in one frame, with its position and visibility in every frame of the scene.
Positions are pixels (x, y) of each frame's ORIGINAL image, in the convention of cameras.json (the centre of the
top-left pixel at (0, 0)). The file holds four arrays:

    query_frames  [N]        int: the frame (index into cameras.json's images) each point is queried in
    query_points  [N, 2]     float: (x, y) of each point in its query frame, inside that image
    tracks        [S, N, 2]  float: (x, y) of each point in every frame (anything finite where it is hidden)
    visible       [S, N]     bool: the point is seen in that frame (always in its query frame)

`tracks[query_frames[n], n]` equals `query_points[n]`. The synthetic scenes (vggt.data.synthetic) carry exact
tracks; the COLMAP importer derives them from a sparse model's point tracks.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggt.data.layout import scene_error

TRACK_ARRAYS = ("query_frames", "query_points", "tracks", "visible")
# The query point must repeat the track's position in its query frame to this many pixels (float32 rounding).
QUERY_POSITION_TOLERANCE_PX = 1e-3
# Query points must lie on their image: within half a pixel of the outer pixel centres.
IMAGE_BORDER_PX = 0.5


@dataclass
class SceneTracks:
    """Tracks of N points through S frames (see the module docstring for the arrays and their units)."""

    query_frames: np.ndarray  # [N] int64
    query_points: np.ndarray  # [N, 2] float32
    tracks: np.ndarray  # [S, N, 2] float32
    visible: np.ndarray  # [S, N] bool

    @property
    def num_points(self) -> int:
        return len(self.query_frames)

    @property
    def num_frames(self) -> int:
        return len(self.tracks)

    def select_frames(self, frames: np.ndarray) -> SceneTracks | None:
        """The tracks on frames `frames` (indices into this scene's frames, in the order given): points whose
        query frame is not among them are dropped, query frames renumbered. None when no point is left."""
        frames = np.asarray(frames, dtype=np.int64)
        position = np.full(self.num_frames, -1, dtype=np.int64)
        position[frames] = np.arange(len(frames))
        kept = np.flatnonzero(position[self.query_frames] >= 0)
        if kept.size == 0:
            return None
        return SceneTracks(
            query_frames=position[self.query_frames[kept]],
            query_points=self.query_points[kept],
            tracks=self.tracks[frames][:, kept],
            visible=self.visible[frames][:, kept],
        )


def write_tracks(path: Path | str, tracks: SceneTracks) -> Path:
    """Write `tracks` as a tracks.npz at `path`."""
    path = Path(path)
    np.savez(
        path,
        query_frames=np.asarray(tracks.query_frames, dtype=np.int64),
        query_points=np.asarray(tracks.query_points, dtype=np.float32),
        tracks=np.asarray(tracks.tracks, dtype=np.float32),
        visible=np.asarray(tracks.visible, dtype=bool),
    )
    return path


def _load_arrays(scene: str, path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise scene_error(
            scene, path, "not a readable .npz file ({error}); write it with numpy.savez", error=error
        ) from None
    missing = [name for name in TRACK_ARRAYS if name not in arrays]
    unknown = sorted(set(arrays) - set(TRACK_ARRAYS))
    if missing or unknown:
        raise scene_error(
            scene,
            path,
            "expected exactly the arrays {expected}; missing {missing}, unknown {unknown}",
            expected=", ".join(TRACK_ARRAYS),
            missing=missing,
            unknown=unknown,
        )
    return arrays


def _check_shapes(scene: str, path: Path, arrays: dict[str, np.ndarray], num_frames: int) -> None:
    """Shapes [N], [N, 2], [S, N, 2], [S, N] with N >= 1 and S the number of images; finite pixels; dtypes."""
    num_points = arrays["query_frames"].shape[0] if arrays["query_frames"].ndim == 1 else 0
    expected = {
        "query_frames": ((num_points,), "[N]"),
        "query_points": ((num_points, 2), "[N, 2]"),
        "tracks": ((num_frames, num_points, 2), f"[{num_frames}, N, 2]"),
        "visible": ((num_frames, num_points), f"[{num_frames}, N]"),
    }
    for name, (shape, spelled) in expected.items():
        if arrays[name].shape != shape or num_points < 1:
            raise scene_error(
                scene,
                path,
                "{name} has shape {shape}; expected {expected} for the {frames} images and N >= 1 points",
                name=name,
                shape=list(arrays[name].shape),
                expected=spelled,
                frames=num_frames,
            )
    for name in ("query_points", "tracks"):
        if not np.issubdtype(arrays[name].dtype, np.floating) or not np.isfinite(arrays[name]).all():
            raise scene_error(scene, path, "{name} must hold finite floating-point pixels", name=name)
    if not np.issubdtype(arrays["query_frames"].dtype, np.integer):
        raise scene_error(
            scene, path, "query_frames must be integers, got dtype {dtype}", dtype=arrays["query_frames"].dtype
        )
    if arrays["visible"].dtype != bool:
        raise scene_error(scene, path, "visible must be boolean, got dtype {dtype}", dtype=arrays["visible"].dtype)


def _check_queries(scene: str, path: Path, tracks: SceneTracks, image_hw: np.ndarray) -> None:
    frames = tracks.query_frames
    if (frames < 0).any() or (frames >= tracks.num_frames).any():
        raise scene_error(
            scene, path, "query_frames must lie in [0, {last}] (one per image)", last=tracks.num_frames - 1
        )
    points = np.arange(tracks.num_points)
    if not tracks.visible[frames, points].all():
        hidden = int((~tracks.visible[frames, points]).sum())
        raise scene_error(scene, path, "{n} points are not visible in their own query frame", n=hidden)
    offset = np.abs(tracks.tracks[frames, points] - tracks.query_points).max()
    if offset > QUERY_POSITION_TOLERANCE_PX:
        raise scene_error(
            scene, path, "tracks in the query frames differ from query_points by up to {offset:.3g} px", offset=offset
        )
    height, width = np.asarray(image_hw)[frames].T
    x, y = tracks.query_points.T
    outside = (x < -IMAGE_BORDER_PX) | (x > width - 1 + IMAGE_BORDER_PX)
    outside |= (y < -IMAGE_BORDER_PX) | (y > height - 1 + IMAGE_BORDER_PX)
    if outside.any():
        raise scene_error(scene, path, "{n} query points lie outside their image", n=int(outside.sum()))


def read_tracks(path: Path | str, image_hw: np.ndarray, scene: str = "?") -> SceneTracks:
    """Read and check a tracks.npz for a scene with images of sizes `image_hw` [S, 2] (height, width).

    Raises SceneFormatError naming the scene, the file and the problem.
    """
    path = Path(path)
    arrays = _load_arrays(scene, path)
    _check_shapes(scene, path, arrays, len(image_hw))
    tracks = SceneTracks(
        query_frames=arrays["query_frames"].astype(np.int64),
        query_points=arrays["query_points"].astype(np.float32),
        tracks=arrays["tracks"].astype(np.float32),
        visible=arrays["visible"],
    )
    _check_queries(scene, path, tracks, image_hw)
    return tracks
