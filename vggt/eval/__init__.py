"""Evaluation: the metrics of the VGGT and VGGSfM papers, and a runner behind `vggt evaluate`.

Units: every "fraction of ..." metric (camera AUC, RRA, RTA, depth delta < 1.25, TAP-Vid position accuracy,
occlusion accuracy, Jaccard) is a percentage, 0 to 100, as in the paper tables; AbsRel is a ratio; point-map
distances are in the ground truth's units. Metric functions accept numpy arrays or torch tensors and compute
in float64 numpy.

- `vggt.eval.camera`: relative pose errors over all frame pairs, RRA@t / RTA@t, AUC@t;
- `vggt.eval.depth`: AbsRel and delta < 1.25 after per-frame median or least-squares scale alignment;
- `vggt.eval.points`: Umeyama Sim(3) alignment, accuracy, completeness, Chamfer distance;
- `vggt.eval.tracks`: TAP-Vid delta_avg, occlusion accuracy, average Jaccard;
- `vggt.eval.runner`: runs a model on scene folders and writes metrics.json and metrics.md.
"""

from vggt.eval.camera import auc_from_errors, camera_auc, relative_pose_errors, rra_rta, rra_rta_from_errors
from vggt.eval.depth import depth_metrics
from vggt.eval.points import pointmap_metrics, umeyama
from vggt.eval.tracks import tapvid_metrics

__all__ = [
    "auc_from_errors",
    "camera_auc",
    "depth_metrics",
    "pointmap_metrics",
    "relative_pose_errors",
    "rra_rta",
    "rra_rta_from_errors",
    "tapvid_metrics",
    "umeyama",
]
