"""The VGGSfM v2 tracker (`TrackerPredictor`), which the reference's COLMAP demo uses for bundle adjustment.

A coarse tracker follows query points through feature maps of the half-resolution images; a fine tracker then
refines each track within image patches around it. Parameter names are those of `vggsfm_v2_tracker.pt`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vggt.dependency.track_modules.encoders import BasicEncoder, ShallowEncoder
from vggt.dependency.track_modules.predictor import BaseTrackerPredictor
from vggt.dependency.track_modules.refine import refine_track

# The coarse feature maps are computed from images downsampled by this factor.
COARSE_DOWN_RATIO = 2
COARSE_STRIDE = 4


class TrackerPredictor(nn.Module):
    """Coarse-to-fine point tracker over a set of images (VGGSfM v2)."""

    def __init__(self, **extra_args) -> None:
        super().__init__()
        if extra_args:
            raise TypeError(
                f"TrackerPredictor takes no arguments (the released architecture), got {sorted(extra_args)}"
            )
        self.coarse_down_ratio = COARSE_DOWN_RATIO
        self.coarse_fnet = BasicEncoder(stride=COARSE_STRIDE)
        self.coarse_predictor = BaseTrackerPredictor(stride=COARSE_STRIDE)
        self.fine_fnet = ShallowEncoder(stride=1)
        self.fine_predictor = BaseTrackerPredictor(
            stride=1,
            depth=4,
            corr_levels=3,
            corr_radius=3,
            latent_dim=32,
            hidden_size=256,
            fine=True,
            use_spaceatt=False,
        )

    def forward(
        self,
        images: Tensor,
        query_points: Tensor,
        fmaps: Tensor | None = None,
        coarse_iters: int = 6,
        inference: bool = True,
        fine_tracking: bool = True,
        fine_chunk: int = 40960,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Track query points of frame 0.

        Args:
            images: [B, S, 3, H, W] RGB in [0, 1].
            query_points: [B, N, 2] pixel (x, y) positions in frame 0.
            fmaps: optional precomputed `process_images_to_fmaps` output as [B, S, C, H', W'].
            coarse_iters: coarse iterations; inference: unused (kept for the reference's signature).
            fine_tracking: refine the tracks on patches; fine_chunk: patches encoded at a time.

        Returns:
            fine tracks [B, S, N, 2], coarse tracks [B, S, N, 2], visibility [B, S, N] and a score (None with fine
            tracking, ones without, as the reference).
        """
        if fmaps is None:
            batch, frames = images.shape[:2]
            fmaps = self.process_images_to_fmaps(images.flatten(0, 1))
            fmaps = fmaps.reshape(batch, frames, *fmaps.shape[1:])
        coarse_tracks, visibility = self.coarse_predictor(
            query_points=query_points, fmaps=fmaps, iters=coarse_iters, down_ratio=self.coarse_down_ratio
        )
        coarse = coarse_tracks[-1]
        if not fine_tracking:
            return coarse, coarse, visibility, visibility.new_ones(visibility.shape)
        fine, score = refine_track(images, self.fine_fnet, self.fine_predictor, coarse, chunk=fine_chunk)
        return fine, coarse, visibility, score

    def process_images_to_fmaps(self, images: Tensor) -> Tensor:
        """[S, 3, H, W] images -> [S, 128, H / 8, W / 8] coarse feature maps."""
        if self.coarse_down_ratio > 1:
            images = F.interpolate(images, scale_factor=1 / self.coarse_down_ratio, mode="bilinear", align_corners=True)
        return self.coarse_fnet(images)
