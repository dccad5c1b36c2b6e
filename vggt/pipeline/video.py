"""Sample frames from a video file (OpenCV) into a folder of PNG images."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from vggt.errors import InputError
from vggt.utils.optional import import_cv2
from vggt.utils.sampling import evenly_spaced_indices

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
# Frames per second sampled when neither `fps` nor `max_frames` is given (as the reference demo does).
DEFAULT_SAMPLE_FPS = 1.0
# Assumed when the container does not report its frame rate.
FALLBACK_VIDEO_FPS = 30.0
FRAME_NAME_FORMAT = "frame_{:06d}.png"


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _open_video(path: Path):  # -> cv2.VideoCapture
    cv2 = import_cv2()
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(
            "cannot read video {path}: OpenCV could not open it (corrupt file or unsupported codec)", path=path
        )
    return capture


def select_frame_indices(
    num_frames: int, video_fps: float, fps: float | None = None, max_frames: int | None = None
) -> list[int]:
    """Indices of the frames to keep out of `num_frames` frames recorded at `video_fps`.

    `fps` keeps one frame every 1/fps seconds (every frame when fps >= video_fps); `max_frames` then
    keeps at most that many, evenly spaced. With neither, `DEFAULT_SAMPLE_FPS` is used.
    """
    if fps is not None and not fps > 0:
        raise InputError("{fps} must be positive, got {value}", value=fps)
    if max_frames is not None and max_frames < 1:
        raise InputError("{max_frames} must be at least 1, got {value}", value=max_frames)
    if fps is None and max_frames is None:
        fps = DEFAULT_SAMPLE_FPS
    indices = np.arange(num_frames)
    if fps is not None and fps < video_fps:
        step = video_fps / fps
        count = int(math.floor((num_frames - 1) / step)) + 1
        indices = np.unique(np.round(np.arange(count) * step).astype(int))
        indices = indices[indices < num_frames]
    indices = indices[evenly_spaced_indices(len(indices), max_frames)]
    return [int(i) for i in indices]


def sample_video_frames(
    video_path: str | Path,
    out_dir: str | Path,
    fps: float | None = None,
    max_frames: int | None = None,
    progress: bool = False,
) -> list[Path]:
    """Write the sampled frames of `video_path` to `out_dir` as `frame_<index>.png`; return their paths.

    `index` is the frame's position in the video. See `select_frame_indices` for `fps` and `max_frames`.
    """
    from tqdm.auto import tqdm

    cv2 = import_cv2()

    video_path = Path(video_path)
    if not video_path.is_file():
        raise InputError("video {path} does not exist", path=video_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    capture = _open_video(video_path)
    try:
        video_fps = capture.get(cv2.CAP_PROP_FPS)
        if not (video_fps and math.isfinite(video_fps) and video_fps > 0):
            logger.warning("%s does not report its frame rate; assuming %g fps", video_path.name, FALLBACK_VIDEO_FPS)
            video_fps = FALLBACK_VIDEO_FPS
        # Count by decoding: the container's frame count is an estimate for many codecs.
        num_frames = 0
        while capture.grab():
            num_frames += 1
    finally:
        capture.release()
    if num_frames == 0:
        raise InputError("cannot read video {path}: no frames could be decoded", path=video_path)

    keep = select_frame_indices(num_frames, video_fps, fps=fps, max_frames=max_frames)
    wanted = set(keep)
    paths: list[Path] = []
    capture = _open_video(video_path)
    try:
        bar = tqdm(total=len(keep), desc="reading video", unit="frame", disable=not progress)
        for index in range(num_frames):
            if not capture.grab():
                break
            if index not in wanted:
                continue
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                raise InputError(
                    "cannot read video {path}: frame {index} could not be decoded", path=video_path, index=index
                )
            path = out_dir / FRAME_NAME_FORMAT.format(index)
            if not cv2.imwrite(str(path), frame):
                raise OSError(f"could not write frame {index} of {video_path} to {path}")
            paths.append(path)
            bar.update(1)
            if len(paths) == len(keep):
                break
        bar.close()
    finally:
        capture.release()
    if not paths:
        raise InputError("cannot read video {path}: no frames could be decoded", path=video_path)
    logger.info("sampled %d of %d frames from %s (%.3g fps video)", len(paths), num_frames, video_path.name, video_fps)
    return paths
