"""The reference's `vggt.dependency.track_modules.track_refine`: fine refinement of coarse tracks."""

from vggt.dependency.track_modules.refine import refine_track

__all__ = ["refine_track"]
