"""VGGT + BA: refine the feed-forward cameras by bundle adjustment on the model's own tracks.

Steps of `refine_with_ba`: `gather_tracks` puts query points on a few reference frames (SIFT keypoints, a grid
where texture is poor) and tracks them with the model's track head (`predict_tracks`: the model's forward with
`heads=("track",)`, the reference frame moved first since queries live in the first frame) -> `observation_mask`
keeps visible, confident observations inside the image -> `initial_points` from the predicted depth (or DLT
triangulation) -> `consistent_observations` drops those the feed-forward cameras reproject badly, and tracks
left too short -> `registered_frames` keeps the frames with enough observations (the others keep their
feed-forward cameras: a partial registration) -> `bundle_adjust` (Theseus) or `ceres_bundle_adjust` (pycolmap).
When fewer than two frames can be registered, the feed-forward cameras come back with `refined` False: the
caller decides what to say (nothing here warns).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vggt.ba.ceres import ceres_bundle_adjust
from vggt.ba.solver import DEFAULT_INLIER_THRESHOLD, BundleAdjustmentResult, bundle_adjust
from vggt.ba.triangulation import triangulate_tracks
from vggt.runtime.engine import StreamingEngine
from vggt.utils.cameras import COLMAP_PIXEL_CENTER
from vggt.utils.geometry import project_points, unproject_depth_map_to_point_map
from vggt.utils.optional import import_pycolmap
from vggt.utils.pose_enc import pose_encoding_to_extri_intri

DEFAULT_NUM_REFERENCE_FRAMES = 3
DEFAULT_QUERY_POINTS_PER_FRAME = 512
# Fewer SIFT keypoints than this on a reference frame: fall back to a regular grid of query points.
MIN_SIFT_KEYPOINTS = 64
# Same defaults as the reference demo: visibility and confidence floors, pixel error against feed-forward cameras.
DEFAULT_VIS_THRESHOLD = 0.2
DEFAULT_CONF_THRESHOLD = 0.2
DEFAULT_MAX_REPROJ_ERROR = 8.0
DEFAULT_MIN_TRACK_LENGTH = 3
INIT_METHODS = ("depth", "triangulate")
BACKENDS = ("theseus", "ceres")
# A frame with fewer observations than this is not registered: its six pose parameters would be barely constrained.
MIN_FRAME_OBSERVATIONS = 8


@dataclass
class BARefinement:
    """Cameras and tracked points after the post-step (the feed-forward cameras when `refined` is False).

    extrinsics [S, 3, 4] camera-from-world, intrinsics [S, 3, 3], points3d [N, 3], tracks [S, N, 2] pixels,
    observation_mask [S, N] (observations kept: inliers of the final BA), ba_result (None when not refined),
    registered [S] bool: the frames bundle adjustment refined (the others keep their feed-forward cameras).
    """

    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    points3d: torch.Tensor
    tracks: torch.Tensor
    observation_mask: torch.Tensor
    refined: bool
    ba_result: BundleAdjustmentResult | None = None
    registered: torch.Tensor | None = None

    @property
    def num_registered(self) -> int:
        """How many frames bundle adjustment refined (0 when it did not run)."""
        return 0 if self.registered is None or not self.refined else int(self.registered.sum())

    def point_observations(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per 3D point, its observations: (frame indices [k] int, pixels [k, 2]), e.g. for a COLMAP export."""
        mask = self.observation_mask.cpu().numpy()
        tracks = self.tracks.detach().cpu().numpy()
        return [(np.nonzero(mask[:, j])[0], tracks[mask[:, j], j]) for j in range(mask.shape[1])]


def reference_frame_indices(num_frames: int, num_reference_frames: int) -> list[int]:
    """Evenly spread reference frames, frame 0 first."""
    count = max(1, min(num_reference_frames, num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, count, endpoint=count > 1)})


def grid_query_points(height: int, width: int, num_points: int) -> np.ndarray:
    """[M <= num_points, 2] pixel (x, y) on a regular grid covering the image."""
    per_side = max(1, int(np.sqrt(num_points * width / height)))
    rows = max(1, num_points // per_side)
    xs = (np.arange(per_side) + 0.5) * width / per_side - 0.5
    ys = (np.arange(rows) + 0.5) * height / rows - 0.5
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.stack((grid_x.ravel(), grid_y.ravel()), axis=-1)


def query_points_for_frame(image: torch.Tensor, num_points: int) -> np.ndarray:
    """[M, 2] query pixels on `image` [3, H, W] in [0, 1]: SIFT keypoints (pycolmap), or a grid if too few."""
    pycolmap = import_pycolmap()

    height, width = image.shape[-2:]
    gray = (image.detach().float().mean(dim=0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    options = pycolmap.FeatureExtractionOptions()
    options.sift.max_num_features = num_points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycolmap 4 prefers FeatureExtractor, same SIFT
        sift = pycolmap.Sift(options, device=pycolmap.Device.cpu)
    keypoints, _ = sift.extract(np.ascontiguousarray(gray))
    # SIFT keypoints use COLMAP's convention (pixel centres at +0.5); ours has centres at integers.
    points = np.unique(keypoints[:num_points, :2].astype(np.float64) - COLMAP_PIXEL_CENTER, axis=0)
    if len(points) < MIN_SIFT_KEYPOINTS:
        return grid_query_points(height, width, num_points)
    return points


@torch.no_grad()
def predict_tracks(
    model: Any, images: torch.Tensor, query_points: torch.Tensor, reference_frame: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Track `query_points` [N, 2] of `reference_frame` through `images` [S, 3, H, W].

    The model takes queries in its first frame, so the reference frame is moved first and the order restored; it
    runs only its track head (`heads=("track",)`), in its own head dtype, over all N queries in one pass of the
    streaming engine.
    Returns tracks [S, N, 2], visibility [S, N] and confidence [S, N] (ones when the head predicts none), float32.
    """
    frames = images.shape[0]
    order = [reference_frame] + [i for i in range(frames) if i != reference_frame]
    queries = query_points.to(device=images.device)
    engine = StreamingEngine.auto(images.device, max_frames_chunk_size=model.config.frames_chunk_size)
    outputs = model(images[order][None], query_points=queries[None], heads=("track",), engine=engine)
    vis = outputs["vis"]
    conf = torch.ones_like(vis) if outputs["conf"] is None else outputs["conf"]
    tracks, vis, conf = (t[0].float() for t in (outputs["track"], vis, conf))
    inverse = torch.empty(frames, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(frames)
    return tracks[inverse], vis[inverse], conf[inverse]


@dataclass
class GatheredTracks:
    """Tracks of the query points of all reference frames, N points in all (frame order of the images).

    tracks [S, N, 2] pixels, vis [S, N], conf [S, N] (each query's own frame holds its pixel, 1 and 1);
    depth_points [N, 3] world points of the predicted depth at the query pixels (None without a depth map).
    """

    tracks: torch.Tensor
    vis: torch.Tensor
    conf: torch.Tensor
    depth_points: torch.Tensor | None


def gather_tracks(
    model: Any,
    images: torch.Tensor,
    num_reference_frames: int,
    query_points_per_frame: int,
    world_points: torch.Tensor | None = None,
    progress: bool = False,
) -> GatheredTracks:
    """Query points on each reference frame of `images` [S, 3, H, W], tracked through all frames (on the CPU).

    world_points: [S, H, W, 3] point map of the predicted depth, read at the query pixels (None: no depth).
    progress: a tqdm bar over the reference frames.
    """
    frames, _, height, width = images.shape
    all_tracks, all_vis, all_conf, all_points = [], [], [], []
    references = reference_frame_indices(frames, num_reference_frames)
    for reference in tqdm(references, desc="tracking", unit="frame", disable=not progress):
        queries = torch.from_numpy(query_points_for_frame(images[reference], query_points_per_frame)).float()
        tracks, vis, conf = predict_tracks(model, images, queries, reference)
        tracks, vis, conf = tracks.cpu(), vis.cpu(), conf.cpu()
        tracks[reference] = queries  # the query pixel is exact in its own frame
        vis[reference], conf[reference] = 1.0, 1.0
        if world_points is not None:
            cols = queries[:, 0].round().long().clamp(0, width - 1)
            rows = queries[:, 1].round().long().clamp(0, height - 1)
            all_points.append(world_points[reference, rows, cols])
        all_tracks.append(tracks)
        all_vis.append(vis)
        all_conf.append(conf)
    depth_points = torch.cat(all_points, 0) if world_points is not None else None
    return GatheredTracks(torch.cat(all_tracks, 1), torch.cat(all_vis, 1), torch.cat(all_conf, 1), depth_points)


def observation_mask(
    gathered: GatheredTracks, image_size: tuple[int, int], vis_threshold: float, conf_threshold: float
) -> torch.Tensor:
    """[S, N] bool: observations visible and confident enough, finite and inside the (height, width) image."""
    height, width = image_size
    tracks = gathered.tracks
    inside = (
        (tracks[..., 0] >= 0) & (tracks[..., 0] <= width - 1) & (tracks[..., 1] >= 0) & (tracks[..., 1] <= height - 1)
    )
    return (gathered.vis > vis_threshold) & (gathered.conf > conf_threshold) & inside & torch.isfinite(tracks).all(-1)


def initial_points(
    init: str, gathered: GatheredTracks, extrinsics: torch.Tensor, intrinsics: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial world points [N, 3] and whether each is usable [N]: the predicted depth at the query pixel
    (init="depth") or the DLT triangulation of the observations in `mask` [S, N] (init="triangulate")."""
    if init == "depth":
        return gathered.depth_points, torch.isfinite(gathered.depth_points).all(-1)
    return triangulate_tracks(extrinsics, intrinsics, gathered.tracks, mask)


def consistent_observations(
    points: torch.Tensor,
    valid: torch.Tensor,
    tracks: torch.Tensor,
    mask: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    max_reproj_error: float,
    min_track_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations of `mask` [S, N] that the feed-forward cameras [S, 3, 4], [S, 3, 3] reproject from usable
    `points` [N, 3] (`valid` [N]) in front of the camera within `max_reproj_error` pixels of `tracks` [S, N, 2];
    returns that mask [S, N] and the points keeping at least max(2, min_track_length) of them [N]."""
    pixels, depth_in_cams = project_points(points, extrinsics, intrinsics)
    error = torch.linalg.norm(pixels - tracks, dim=-1)
    mask = mask & (error < max_reproj_error) & (depth_in_cams > 0) & valid[None]
    return mask, mask.sum(0) >= max(2, min_track_length)


def registered_frames(mask: torch.Tensor, min_observations: int = MIN_FRAME_OBSERVATIONS) -> torch.Tensor:
    """[S] bool: the frames with at least `min_observations` observations in `mask` [S, N]."""
    return mask.sum(dim=1) >= min_observations


def feed_forward_cameras(
    predictions: dict[str, Any], image_size: tuple[int, int], frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Extrinsics [S, 3, 4] and intrinsics [S, 3, 3] (float32, CPU): `predictions["extrinsic"]` and
    `["intrinsic"]` when given (cameras already decoded), else decoded from `predictions["pose_enc"]`."""
    if "extrinsic" in predictions and "intrinsic" in predictions:
        extrinsics = torch.as_tensor(predictions["extrinsic"]).reshape(frames, 3, 4)
        intrinsics = torch.as_tensor(predictions["intrinsic"]).reshape(frames, 3, 3)
    elif "pose_enc" in predictions:
        pose_enc = predictions["pose_enc"].reshape(-1, frames, predictions["pose_enc"].shape[-1])[0].detach().float()
        extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, image_size_hw=image_size)
    else:
        raise ValueError("predictions must hold 'pose_enc' (run the model with its camera head)")
    extrinsics, intrinsics = extrinsics.detach().float().cpu(), intrinsics.detach().float().cpu()
    if not (torch.isfinite(extrinsics).all() and torch.isfinite(intrinsics).all()):
        raise ValueError("the feed-forward cameras are non-finite (e.g. a zero field of view); nothing to refine")
    return extrinsics, intrinsics


def depth_world_points(
    predictions: dict[str, Any], extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """[S, H, W, 3] world points of `predictions["depth"]` seen by the cameras [S, 3, 4], [S, 3, 3]."""
    if "depth" not in predictions:
        raise ValueError("init='depth' needs predictions['depth']; use init='triangulate' without a depth head")
    depth = predictions["depth"].reshape(len(extrinsics), *image_size).detach().float().cpu()
    return torch.from_numpy(unproject_depth_map_to_point_map(depth, extrinsics, intrinsics)).float()


def _single_scene(images: torch.Tensor) -> torch.Tensor:
    """`images` [S, 3, H, W] or [1, S, 3, H, W] as [S, 3, H, W], S >= 2."""
    if images.ndim == 5:
        if images.shape[0] != 1:
            raise ValueError(f"refine_with_ba takes one scene, got a batch of {images.shape[0]}")
        images = images[0]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [S, 3, H, W] or [1, S, 3, H, W], got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"bundle adjustment needs at least two frames, got {images.shape[0]}")
    return images


def refine_with_ba(
    model: Any,
    images: torch.Tensor,
    predictions: dict[str, Any],
    num_reference_frames: int = DEFAULT_NUM_REFERENCE_FRAMES,
    query_points_per_frame: int = DEFAULT_QUERY_POINTS_PER_FRAME,
    vis_threshold: float = DEFAULT_VIS_THRESHOLD,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    max_reproj_error: float = DEFAULT_MAX_REPROJ_ERROR,
    min_track_length: int = DEFAULT_MIN_TRACK_LENGTH,
    init: str = "depth",
    loss: str | None = "cauchy",
    loss_scale: float = 1.0,
    shared_focal: bool = True,
    refine_focal: bool = True,
    max_iterations: int = 100,
    inlier_threshold: float = DEFAULT_INLIER_THRESHOLD,
    backend: str = "theseus",
    intrinsics: torch.Tensor | None = None,
    progress: bool = False,
    fixed_frames: Sequence[int] | None = None,
) -> BARefinement:
    """Bundle-adjust VGGT's feed-forward cameras on its own tracks.

    Args:
        model: a VGGT model with a track head (run with `heads=("track",)` once per reference frame).
        images: [S, 3, H, W] or [1, S, 3, H, W] in [0, 1], the images `predictions` came from.
        predictions: the model's output on `images`: `pose_enc` (or decoded `extrinsic` and `intrinsic`), and
            `depth` for init="depth".
        init: initial 3D points from the predicted "depth" at the query pixel, or "triangulate" (DLT).
        backend: "theseus" (`bundle_adjust`, differentiable) or "ceres" (`ceres_bundle_adjust`, pycolmap).
        intrinsics: [S, 3, 3] to start from instead of the decoded ones (e.g. fitted to a camera model).
        progress: tqdm bars for the tracking and the solve.
        fixed_frames: frames whose cameras stay exactly as in `predictions` (known poses; at least two).
        The other arguments set the query points, the track filters and the solver.

    Returns:
        BARefinement: the frames with enough tracks refined (`registered`), the others as predicted; `refined`
        False and the feed-forward cameras when fewer than two frames could be registered.
    """
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    images = _single_scene(images)
    image_size = tuple(images.shape[-2:])
    extrinsics, decoded_intrinsics = feed_forward_cameras(predictions, image_size, len(images))
    if intrinsics is None:
        intrinsics = decoded_intrinsics
    else:
        intrinsics = torch.as_tensor(intrinsics).detach().float().cpu().reshape(len(images), 3, 3)
    world_points = depth_world_points(predictions, extrinsics, intrinsics, image_size) if init == "depth" else None

    gathered = gather_tracks(model, images, num_reference_frames, query_points_per_frame, world_points, progress)
    mask = observation_mask(gathered, image_size, vis_threshold, conf_threshold)
    points, valid = initial_points(init, gathered, extrinsics, intrinsics, mask)
    mask, keep = consistent_observations(
        points, valid, gathered.tracks, mask, extrinsics, intrinsics, max_reproj_error, min_track_length
    )
    tracks, mask, points = gathered.tracks[:, keep], mask[:, keep], points[keep]
    return adjust_registered(
        extrinsics,
        intrinsics,
        points,
        tracks,
        mask,
        image_size,
        backend,
        progress,
        loss=loss,
        loss_scale=loss_scale,
        shared_focal=shared_focal,
        refine_focal=refine_focal,
        max_iterations=max_iterations,
        inlier_threshold=inlier_threshold,
        fixed_frames=fixed_frames,
    )


def adjust_registered(
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    points: torch.Tensor,
    tracks: torch.Tensor,
    mask: torch.Tensor,
    image_size: tuple[int, int],
    backend: str = "theseus",
    progress: bool = False,
    **solver_options: Any,
) -> BARefinement:
    """Bundle-adjust the frames with at least MIN_FRAME_OBSERVATIONS observations (a partial registration): the
    others' observations are dropped, so they keep their cameras; fewer than two such frames: `refined` False.

    Args:
        extrinsics [S, 3, 4], intrinsics [S, 3, 3], points [N, 3], tracks [S, N, 2], mask [S, N] (float32, CPU).
        solver_options: keywords of `bundle_adjust` / `ceres_bundle_adjust` (loss, focal and iteration options).
    """
    registered = registered_frames(mask)
    mask = mask & registered[:, None]
    mask = mask & (mask.sum(0) >= 2)[None]
    if int(registered.sum()) < 2 or not mask.any():
        return BARefinement(extrinsics, intrinsics, points, tracks, mask, refined=False, registered=registered)

    solve = bundle_adjust if backend == "theseus" else ceres_bundle_adjust
    with tqdm(total=1, desc=f"bundle adjustment ({backend})", unit="solve", disable=not progress) as bar:
        result = solve(
            extrinsics,
            intrinsics,
            points,
            tracks,
            mask,
            image_size=image_size,
            **solver_options,
        )
        bar.update(1)
    return BARefinement(
        result.extrinsics,
        result.intrinsics,
        result.points3d,
        tracks,
        result.inlier_mask,
        refined=True,
        ba_result=result,
        registered=registered,
    )
