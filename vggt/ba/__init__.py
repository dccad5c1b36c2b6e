"""Bundle adjustment on the model's own tracks (optional extra `vggt[ba]`, built on Theseus)."""

from vggt.ba.solver import BundleAdjustmentResult, bundle_adjust

__all__ = ["BundleAdjustmentResult", "bundle_adjust"]
