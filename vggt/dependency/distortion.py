"""The reference's `vggt.dependency.distortion`: lens distortion of normalised points (see `vggt.utils.distortion`)."""

from vggt.utils.distortion import apply_distortion, iterative_undistortion, single_undistortion

__all__ = ["apply_distortion", "iterative_undistortion", "single_undistortion"]
