"""Keypoint extractors for choosing the tracker's query points: ALIKED (kornia), SuperPoint (this package's
network, LightGlue's released weights) and SIFT (OpenCV).

Each is a module with `extract(image [3, H, W] in [0, 1], invalid_mask=None) -> {"keypoints": [1, N, 2]}`, pixel
(x, y) with pixel centres at integer coordinates, as the reference's LightGlue extractors return them (without their
resizing: images are used at the size given). Pretrained weights come through the torch hub cache, so a file placed
in `$TORCH_HOME/hub/checkpoints` serves offline.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.errors import DependencyError
from vggt.utils.optional import import_cv2

KEYPOINTS_EXTRA = "pip install 'vggt[keypoints]'"
SUPERPOINT_URL = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/superpoint_v1.pth"
ALIKED_MODEL = "aliked-n16"
# ITU-R 601 luma weights: SuperPoint reads grayscale.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _local_maxima(scores: Tensor, radius: int) -> Tensor:
    """Scores [B, H, W] with everything but non-maximum-suppressed peaks set to zero (SuperPoint's NMS: peaks,
    then two rounds that admit the maxima left once the windows around kept peaks are cleared)."""

    def window_max(x: Tensor) -> Tensor:
        return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)

    peaks = scores == window_max(scores)
    for _ in range(2):
        suppressed = window_max(peaks.float()) > 0
        remaining = torch.where(suppressed, torch.zeros_like(scores), scores)
        peaks = peaks | ((remaining == window_max(remaining)) & ~suppressed)
    return torch.where(peaks, scores, torch.zeros_like(scores))


class SuperPoint(nn.Module):
    """SuperPoint keypoint detector (MagicLeap's network; descriptors are not computed here)."""

    def __init__(
        self,
        max_num_keypoints: int | None = None,
        detection_threshold: float = 0.0005,
        nms_radius: int = 4,
        remove_borders: int = 4,
        weights_url: str | None = SUPERPOINT_URL,
    ) -> None:
        super().__init__()
        self.max_num_keypoints = max_num_keypoints
        self.detection_threshold = detection_threshold
        self.nms_radius = nms_radius
        self.remove_borders = remove_borders
        widths = [(1, 64), (64, 64), (64, 64), (64, 64), (64, 128), (128, 128), (128, 128), (128, 128)]
        names = ["conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b"]
        for name, (c_in, c_out) in zip(names, widths):
            setattr(self, name, nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
        self.convPa = nn.Conv2d(128, 256, kernel_size=3, padding=1)
        self.convPb = nn.Conv2d(256, 65, kernel_size=1)
        self.convDa = nn.Conv2d(128, 256, kernel_size=3, padding=1)
        self.convDb = nn.Conv2d(256, 256, kernel_size=1)
        if weights_url is not None:
            self.load_state_dict(torch.hub.load_state_dict_from_url(weights_url, map_location="cpu", weights_only=True))

    def scores(self, gray: Tensor) -> Tensor:
        """[B, 1, H, W] grayscale -> [B, H', W'] keypoint probabilities (H', W' multiples of 8)."""
        x = gray
        for stage in range(4):
            x = F.relu(getattr(self, f"conv{stage + 1}a")(x))
            x = F.relu(getattr(self, f"conv{stage + 1}b")(x))
            if stage < 3:
                x = F.max_pool2d(x, 2, 2)
        cells = F.softmax(self.convPb(F.relu(self.convPa(x))), dim=1)[:, :-1]  # [B, 64, H/8, W/8]
        batch, _, height, width = cells.shape
        cells = cells.permute(0, 2, 3, 1).reshape(batch, height, width, 8, 8)
        return cells.permute(0, 1, 3, 2, 4).reshape(batch, height * 8, width * 8)

    @torch.no_grad()
    def extract(self, image: Tensor, invalid_mask: Tensor | None = None) -> dict[str, Tensor]:
        weights = image.new_tensor(GRAY_WEIGHTS).view(3, 1, 1)
        gray = (image * weights).sum(0, keepdim=True)[None]
        scores = _local_maxima(self.scores(gray), self.nms_radius)[0]
        border = self.remove_borders
        if border:
            scores[:border], scores[-border:], scores[:, :border], scores[:, -border:] = -1, -1, -1, -1
        rows, cols = torch.nonzero(scores > self.detection_threshold, as_tuple=True)
        values = scores[rows, cols]
        if self.max_num_keypoints is not None and len(values) > self.max_num_keypoints:
            values, order = values.topk(self.max_num_keypoints)
            rows, cols = rows[order], cols[order]
        return {"keypoints": torch.stack((cols, rows), dim=-1).float()[None], "keypoint_scores": values[None]}


class ALIKED(nn.Module):
    """ALIKED keypoints through kornia (the `keypoints` extra), with the reference's arguments."""

    def __init__(self, max_num_keypoints: int = -1, detection_threshold: float = 0.2, model_name: str = ALIKED_MODEL):
        super().__init__()
        try:
            from kornia.feature import ALIKED as KorniaALIKED
        except ImportError as err:
            raise DependencyError(
                "ALIKED keypoints need kornia: {hint} ({error})", hint=KEYPOINTS_EXTRA, error=err
            ) from None
        self.model = KorniaALIKED.from_pretrained(
            model_name, max_num_keypoints=max_num_keypoints, detection_threshold=detection_threshold
        )

    @torch.no_grad()
    def extract(self, image: Tensor, invalid_mask: Tensor | None = None) -> dict[str, Tensor]:
        features = self.model(image[None].to(next(self.model.parameters()).dtype))[0]
        return {"keypoints": features.keypoints[None].float(), "keypoint_scores": features.keypoint_scores[None]}


class SIFT(nn.Module):
    """SIFT keypoints through OpenCV, strongest first."""

    def __init__(self, max_num_keypoints: int | None = None) -> None:
        super().__init__()
        self.max_num_keypoints = max_num_keypoints
        self.detector = import_cv2().SIFT_create(nfeatures=max_num_keypoints or 0)

    @torch.no_grad()
    def extract(self, image: Tensor, invalid_mask: Tensor | None = None) -> dict[str, Tensor]:
        gray = (image.float() * image.new_tensor(GRAY_WEIGHTS).float().view(3, 1, 1)).sum(0)
        found = self.detector.detect((gray.clamp(0, 1) * 255).round().byte().cpu().numpy(), None)
        found = sorted(found, key=lambda k: -k.response)[: self.max_num_keypoints]
        xy = np.array([k.pt for k in found], dtype=np.float32).reshape(-1, 2)
        return {"keypoints": torch.from_numpy(xy).to(image.device)[None]}
