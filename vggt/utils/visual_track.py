"""Track drawing of the reference package: each track coloured by where it is first seen, drawn as dots on every
frame, written as PNGs (`frame_<s>.png`: the frame beside its drawing; `tracks_grid.png`: all of them in a grid).

Needs OpenCV (the `export` extra) and matplotlib's colour maps (the `train` extra).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vggt.errors import DependencyError
from vggt.utils.optional import import_cv2

DOT_RADIUS = 3


def _colormap(name: str):
    try:
        import matplotlib
    except ImportError as err:
        raise DependencyError("track colours need matplotlib: pip install 'vggt[train]' ({error})", error=err) from None
    return matplotlib.colormaps[name]


def color_from_xy(x: float, y: float, W: int, H: int, cmap_name: str = "hsv") -> tuple[float, float, float]:
    """RGB in [0, 1] of a position: the colour map at the mean of x / (W - 1) and y / (H - 1)."""
    position = (x / max(W - 1, 1) + y / max(H - 1, 1)) / 2.0
    red, green, blue, _ = _colormap(cmap_name)(position)
    return red, green, blue


def get_track_colors_by_position(
    tracks_b: torch.Tensor,
    vis_mask_b: torch.Tensor | None = None,
    image_width: int | None = None,
    image_height: int | None = None,
    cmap_name: str = "hsv",
) -> np.ndarray:
    """[N, 3] uint8 RGB per track of tracks_b [S, N, 2], from its position in its first visible frame
    (vis_mask_b [S, N], None: all visible); never-visible tracks are black."""
    frames, num_tracks, _ = tracks_b.shape
    visible = torch.ones(frames, num_tracks, dtype=torch.bool) if vis_mask_b is None else vis_mask_b.bool().cpu()
    colors = np.zeros((num_tracks, 3), dtype=np.uint8)
    for track in range(num_tracks):
        seen = torch.nonzero(visible[:, track])[:, 0]
        if len(seen) == 0:
            continue
        x, y = tracks_b[int(seen[0]), track].tolist()
        rgb = color_from_xy(x, y, W=image_width, H=image_height, cmap_name=cmap_name)
        colors[track] = [int(c * 255) for c in rgb]
    return colors


def _to_uint8_hwc(image: torch.Tensor, image_format: str, normalize_mode: str | None) -> np.ndarray:
    pixels = (image.permute(1, 2, 0) if image_format == "CHW" else image).float().numpy()
    if normalize_mode == "[0,1]":
        pixels = np.clip(pixels, 0, 1) * 255.0
    elif normalize_mode == "[-1,1]":
        pixels = np.clip((pixels + 1.0) * 127.5, 0, 255.0)
    return pixels.astype(np.uint8)


def visualize_tracks_on_images(
    images: torch.Tensor,
    tracks: torch.Tensor,
    track_vis_mask: torch.Tensor | None = None,
    out_dir: str | os.PathLike = "track_visuals_concat_by_xy",
    image_format: str = "CHW",
    normalize_mode: str | None = "[0,1]",
    cmap_name: str = "hsv",
    frames_per_row: int = 4,
    save_grid: bool = True,
) -> None:
    """Draw tracks on their frames and write the PNGs into `out_dir`.

    Args:
        images: [S, 3, H, W] ("CHW") or [S, H, W, 3] ("HWC"), optionally with a leading batch of 1.
        tracks: [S, N, 2] pixel (x, y), optionally [1, S, N, 2]; track_vis_mask: [S, N] (None: all visible).
        normalize_mode: "[0,1]", "[-1,1]" or None (values already 0..255).
        cmap_name: matplotlib colour map; frames_per_row, save_grid: the grid image.
    """
    cv2 = import_cv2()
    if tracks.ndim == 4:
        images, tracks = images.squeeze(0), tracks[0]
        track_vis_mask = None if track_vis_mask is None else track_vis_mask.squeeze(0)
    images, tracks = images.detach().cpu(), tracks.detach().cpu()
    visible = None if track_vis_mask is None else track_vis_mask.detach().cpu().bool()
    height, width = images.shape[2:4] if image_format == "CHW" else images.shape[1:3]
    colors = get_track_colors_by_position(tracks, visible, image_width=width, image_height=height, cmap_name=cmap_name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    panels = []
    for frame in range(images.shape[0]):
        original = _to_uint8_hwc(images[frame], image_format, normalize_mode)
        drawn = original.copy()
        shown = range(tracks.shape[1]) if visible is None else torch.nonzero(visible[frame])[:, 0].tolist()
        for track in shown:
            x, y = tracks[frame, track].tolist()
            color = tuple(int(c) for c in colors[track])
            cv2.circle(drawn, (int(round(x)), int(round(y))), radius=DOT_RADIUS, color=color, thickness=-1)
        panel = np.concatenate([original, drawn], axis=1)  # RGB
        cv2.imwrite(str(out_dir / f"frame_{frame:04d}.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        panels.append(panel)

    if save_grid:
        blank = np.zeros_like(panels[0])
        rows = []
        for start in range(0, len(panels), frames_per_row):
            row = panels[start : start + frames_per_row]
            rows.append(np.concatenate(row + [blank] * (frames_per_row - len(row)), axis=1))
        cv2.imwrite(str(out_dir / "tracks_grid.png"), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
        print(f"[INFO] Saved color-by-XY track visualization grid -> {out_dir / 'tracks_grid.png'}")
    print(f"[INFO] Saved {len(panels)} individual frames to {out_dir}/frame_*.png")
