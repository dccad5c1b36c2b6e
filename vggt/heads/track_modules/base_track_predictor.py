"""The reference's `BaseTrackerPredictor` (the track head's tracker) under its module path, over `TrackerPredictor`."""

from __future__ import annotations

from vggt.errors import InputError
from vggt.heads.track_modules.tracker import TrackerPredictor

# The training image size the reference records on its tracker (`max_scale`); it changes no computation.
MAX_SCALE = 518


class BaseTrackerPredictor(TrackerPredictor):
    """`TrackerPredictor` built from the reference's arguments; `use_spaceatt=False` (no attention across tracks)
    is not provided."""

    def __init__(
        self,
        stride: int = 1,
        corr_levels: int = 5,
        corr_radius: int = 4,
        latent_dim: int = 128,
        hidden_size: int = 384,
        use_spaceatt: bool = True,
        depth: int = 6,
        max_scale: int = MAX_SCALE,
        predict_conf: bool = True,
    ) -> None:
        if not use_spaceatt:
            raise InputError("the tracker always attends across tracks; pass use_spaceatt=True")
        super().__init__(
            latent_dim=latent_dim,
            hidden_size=hidden_size,
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            depth=depth,
            predict_conf=predict_conf,
        )
        self.max_scale = max_scale
