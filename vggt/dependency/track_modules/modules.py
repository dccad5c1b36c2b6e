"""The reference's `vggt.dependency.track_modules.modules`: the tracker's building blocks (shared with the track
head's, `vggt.heads.track_modules.modules`)."""

from vggt.heads.track_modules.modules import AttnBlock, CrossAttnBlock, Mlp, ResidualBlock, default, exists

__all__ = ["AttnBlock", "CrossAttnBlock", "Mlp", "ResidualBlock", "default", "exists"]
