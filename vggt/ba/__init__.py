"""Bundle adjustment on the model's own tracks (optional extra `vggt[ba]`, built on Theseus).

`bundle_adjust` refines cameras and points on given tracks; `refine_with_ba` is the VGGT + BA post-step.
Modules: `solver` (bundle_adjust: objective, Levenberg-Marquardt, results), `inputs` (checks and conversion of its
arrays), `costs` and `linear` (the Theseus cost functions and linear solvers), `postprocess` (refine_with_ba),
`triangulation`, `ceres` (the same problem solved by COLMAP's Ceres bundle adjuster through pycolmap: the
`--ba-backend ceres` of `vggt reconstruct`, and the yardstick of benchmarks/ba.py), and `testing` (synthetic
problems with known answers for tests and benchmarks; nothing else imports it).
Only `costs` and `linear` import Theseus, and only when a solve runs, so this package imports without it.
"""

from vggt.ba.postprocess import BARefinement, refine_with_ba
from vggt.ba.solver import INSTALL_HINT, BundleAdjustmentResult, bundle_adjust
from vggt.ba.triangulation import triangulate_tracks

__all__ = [
    "INSTALL_HINT",
    "BARefinement",
    "BundleAdjustmentResult",
    "bundle_adjust",
    "refine_with_ba",
    "triangulate_tracks",
]
