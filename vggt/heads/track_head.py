"""Track head: DPT feature maps at half resolution, then the iterative point tracker."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vggt.heads.dpt_head import DPTHead
from vggt.heads.track_modules.tracker import TrackerPredictor, check_query_points

# The feature extractor outputs maps at 1 / FEATURE_DOWN_RATIO of the image resolution.
FEATURE_DOWN_RATIO = 2


class TrackHead(nn.Module):
    """Tracks query points of the first frame through all frames of a scene.

    A DPT head turns aggregated tokens into `features`-channel maps at half the image resolution, and
    a tracker refines the tracks over `iters` iterations of correlation and transformer updates.

    Args:
        dim_in: width of the aggregated tokens.
        patch_size: image pixels per patch side.
        features: channels of the feature maps (the tracker's latent dim).
        iters: default number of refinement iterations.
        predict_conf: also predict a confidence per track and frame.
        stride: resolution ratio between images and feature maps, as seen by the tracker.
        corr_levels, corr_radius: correlation pyramid depth and window radius.
        hidden_size, updateformer_depth, updateformer_num_heads, num_virtual_tracks: tracker transformer sizes.
        intermediate_layer_idx, out_channels: which aggregator outputs the DPT head reads, and their widths.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        features: int = 128,
        iters: int = 4,
        predict_conf: bool = True,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        updateformer_depth: int = 6,
        updateformer_num_heads: int = 8,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in,
            patch_size=patch_size,
            features=features,
            out_channels=tuple(out_channels),
            intermediate_layer_idx=tuple(intermediate_layer_idx),
            feature_only=True,
            down_ratio=FEATURE_DOWN_RATIO,
            pos_embed=False,
        )
        self.tracker = TrackerPredictor(
            latent_dim=features,
            hidden_size=hidden_size,
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            depth=updateformer_depth,
            num_heads=updateformer_num_heads,
            num_virtual_tracks=num_virtual_tracks,
            predict_conf=predict_conf,
        )

    def extract_features(
        self,
        aggregated_tokens_list: list[Tensor],
        images: Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None = 8,
    ) -> Tensor:
        """Feature maps [B, S, features, H / 2, W / 2] for images [B, S, 3, H, W]."""
        return self.feature_extractor(
            aggregated_tokens_list, images, patch_start_idx, frames_chunk_size=frames_chunk_size
        )

    def forward(
        self,
        aggregated_tokens_list: list[Tensor],
        images: Tensor,
        patch_start_idx: int,
        query_points: Tensor,
        iters: int | None = None,
        frames_chunk_size: int | None = 8,
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """Track query_points [B, N, 2] (pixel x, y in the first frame) through images [B, S, 3, H, W].

        Returns the tracks after each iteration (a list of [B, S, N, 2] in pixels; the last is the
        final answer), visibility [B, S, N] and confidence [B, S, N] (None without predict_conf), in [0, 1].
        """
        if images.ndim != 5:
            raise ValueError(f"images must be [B, S, 3, H, W], got shape {tuple(images.shape)}")
        check_query_points(query_points, images.shape[0])
        feature_maps = self.extract_features(aggregated_tokens_list, images, patch_start_idx, frames_chunk_size)
        return self.tracker(query_points, feature_maps, iters=self.iters if iters is None else iters)
