"""Random weights for the third-party models the reference's tracking code downloads, laid out in a torch hub cache
(`<TORCH_HOME>/hub/checkpoints/<file name of the URL>`) exactly where `torch.hub.load_state_dict_from_url` (and
kornia's loader) look before downloading: what a user's cache would hold, with random values."""

from __future__ import annotations

from pathlib import Path

import torch


def write_tracking_weights(torch_home: Path) -> Path:
    """VGGSfM tracker (predicting no motion), DINOv2 ViT-B/14 with registers, SuperPoint and ALIKED-N16 files;
    returns the folder."""
    from kornia.feature import ALIKED as KorniaALIKED

    from vggt.dependency.keypoints import SuperPoint
    from vggt.dependency.vggsfm_tracker import TrackerPredictor
    from vggt.layers.dinov2 import vit_base

    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    models = {
        "vggsfm_v2_tracker.pt": TrackerPredictor(),
        # Flat block names, as DINOv2's hub models are built (block_chunks=0) and their files hold them.
        "dinov2_vitb14_reg4_pretrain.pth": vit_base(
            patch_size=14, num_register_tokens=4, img_size=518, init_values=1.0, block_chunks=0
        ),
        "superpoint_v1.pth": SuperPoint(weights_url=None),
        "aliked-n16.pth": KorniaALIKED("aliked-n16"),
    }
    for name, model in models.items():
        state = model.state_dict()
        # A tracker whose updates are zero keeps every track at its query point: with identical cameras the
        # tracks then agree with the geometry, so the reference's bundle adjustment has inliers to work with.
        for key in [k for k in state if ".updateformer.flow_head." in k]:
            state[key] = torch.zeros_like(state[key])
        torch.save(state, checkpoints / name)
    return checkpoints
