"""The reference's `vggt.dependency.vggsfm_utils`: building the VGGSfM tracker, choosing query frames with DINOv2,
keypoint extractors and chunked tracking.

Weights come through the torch hub cache (`torch.hub.load_state_dict_from_url`, never unpickling objects), so
files placed in `$TORCH_HOME/hub/checkpoints` serve offline: `vggsfm_v2_tracker.pt` (the tracker) and
`dinov2_vit{s,b,l}14_reg4_pretrain.pth` (the frame ranking, run on this package's DINOv2 encoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.dependency.keypoints import ALIKED, SIFT, SuperPoint
from vggt.dependency.vggsfm_tracker import TrackerPredictor
from vggt.errors import InputError
from vggt.layers.dinov2 import forward_features, vit_base, vit_large, vit_small
from vggt.layers.vision_transformer import VGGT_ENCODER_OPTIONS

TRACKER_URL = "https://huggingface.co/facebook/VGGSfM/resolve/main/vggsfm_v2_tracker.pt"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{short}/{short}_reg4_pretrain.pth"
DINOV2_MODELS = {"dinov2_vits14_reg": vit_small, "dinov2_vitb14_reg": vit_base, "dinov2_vitl14_reg": vit_large}
_RESNET_MEAN = (0.485, 0.456, 0.406)
_RESNET_STD = (0.229, 0.224, 0.225)


def build_vggsfm_tracker(model_path: str | None = None) -> TrackerPredictor:
    """The VGGSfM v2 tracker in eval mode, with weights from `model_path` or the torch hub cache (else downloaded)."""
    tracker = TrackerPredictor()
    if model_path is None:
        state = torch.hub.load_state_dict_from_url(TRACKER_URL, map_location="cpu", weights_only=True)
    else:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
    tracker.load_state_dict(state)
    return tracker.eval()


def _dinov2(model_name: str) -> nn.Module:
    if model_name not in DINOV2_MODELS:
        raise InputError(
            "model_name={model_name} is not a DINOv2 model with registers this package builds; use one of {choices}",
            model_name=model_name,
            choices=", ".join(DINOV2_MODELS),
        )
    options = {"patch_size": 14, "num_register_tokens": 4, "img_size": 518, "init_values": 1.0, **VGGT_ENCODER_OPTIONS}
    model = DINOV2_MODELS[model_name](**options)
    url = DINOV2_URL.format(short=model_name.removesuffix("_reg"))
    model.load_state_dict(torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True))
    return model.eval()


def generate_rank_by_dino(
    images: Tensor,
    query_frame_num: int,
    image_size: int = 336,
    model_name: str = "dinov2_vitb14_reg",
    device: str | torch.device = "cuda",
    spatial_similarity: bool = False,
) -> list[int]:
    """Frames to query, most representative first, then the most different from those chosen (farthest point
    sampling on DINOv2 feature similarity).

    Args:
        images: [S, 3, H, W] in [0, 1].
        query_frame_num: frames to pick.
        image_size: side the frames are resized to for DINOv2.
        model_name: `dinov2_vit{s,b,l}14_reg`.
        device: where DINOv2 runs.
        spatial_similarity: compare patch tokens instead of the class token.

    Returns:
        query_frame_num (or S, if fewer) frame indices.
    """
    images = F.interpolate(images.float(), (image_size, image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(_RESNET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(_RESNET_STD, device=images.device).view(1, 3, 1, 1)
    model = _dinov2(model_name).to(device)
    with torch.no_grad():
        features = forward_features(model, ((images - mean) / std).to(device))
    if spatial_similarity:
        tokens = F.normalize(features["x_norm_patchtokens"], p=2, dim=1).transpose(0, 1)  # [P, S, C]
        similarity = torch.bmm(tokens, tokens.transpose(-1, -2)).mean(dim=0)
    else:
        tokens = F.normalize(features["x_norm_clstoken"], p=2, dim=1)
        similarity = tokens @ tokens.T
    similarity = similarity.float()
    distance = 100 - similarity
    similarity.fill_diagonal_(-100)
    most_common = int(torch.argmax(similarity.sum(dim=1)))
    return farthest_point_sampling(distance, query_frame_num, most_common)


def farthest_point_sampling(distance_matrix: Tensor, num_samples: int, most_common_frame_index: int = 0) -> list[int]:
    """Greedy farthest point sampling on an [S, S] distance matrix from `most_common_frame_index`: each step picks
    the frame farthest from the one picked last. Returns at most `num_samples` distinct indices."""
    distances = distance_matrix.clamp(min=0)
    chosen = [most_common_frame_index]
    row = distances[most_common_frame_index].clone()
    row[chosen] = 0
    while len(chosen) < min(num_samples, len(distances)):
        farthest = int(torch.argmax(row))
        chosen.append(farthest)
        row = distances[farthest].clone()
        row[chosen] = 0
    return chosen


def calculate_index_mappings(query_index: int, S: int, device: str | torch.device | None = None) -> Tensor:
    """Frame order [S] that swaps frame 0 and `query_index` (its own inverse)."""
    order = torch.arange(S)
    order[0], order[query_index] = query_index, 0
    return order if device is None else order.to(device)


def switch_tensor_order(tensors: Sequence[Tensor | None], order: Tensor, dim: int = 1) -> list[Tensor | None]:
    """Each tensor reindexed along `dim` by `order` (None stays None)."""
    return [None if t is None else torch.index_select(t, dim, order) for t in tensors]


def initialize_feature_extractors(
    max_query_num: int, det_thres: float = 0.005, extractor_method: str = "aliked", device: str | torch.device = "cuda"
) -> dict[str, nn.Module]:
    """Keypoint extractors named by `extractor_method` ("aliked", "sp", "sift", joined by "+"), in eval mode.

    Unknown names are skipped with a warning, and ALIKED is used when none is known, as in the reference.
    """
    builders = {
        "aliked": lambda: ALIKED(max_num_keypoints=max_query_num, detection_threshold=det_thres),
        "sp": lambda: SuperPoint(max_num_keypoints=max_query_num, detection_threshold=det_thres),
        "sift": lambda: SIFT(max_num_keypoints=max_query_num),
    }
    extractors = {}
    for method in (m.strip() for m in extractor_method.lower().split("+")):
        if method in builders:
            extractors[method] = builders[method]().to(device).eval()
        else:
            print(f"Warning: Unknown feature extractor '{method}', ignoring.")
    if not extractors:
        print(f"Warning: No valid extractors found in '{extractor_method}'. Using ALIKED by default.")
        extractors["aliked"] = builders["aliked"]().to(device).eval()
    return extractors


def extract_keypoints(query_image: Tensor, extractors: dict[str, nn.Module], round_keypoints: bool = True) -> Tensor:
    """Keypoints [1, N, 2] of an image [3, H, W] from every extractor, concatenated."""
    points = []
    with torch.no_grad():
        for extractor in extractors.values():
            found = extractor.extract(query_image, invalid_mask=None)["keypoints"]
            points.append(found.round() if round_keypoints else found)
    return torch.cat(points, dim=1)


def predict_tracks_in_chunks(
    track_predictor: nn.Module,
    images_feed: Tensor,
    query_points_list: Sequence[Tensor] | Tensor,
    fmaps_feed: Tensor,
    fine_tracking: bool,
    num_splits: int | None = None,
    fine_chunk: int = 40960,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Track chunks of query points and concatenate the results.

    Args:
        track_predictor: a `TrackerPredictor`.
        images_feed: [B, S, 3, H, W]; fmaps_feed: its feature maps [B, S, C, H', W'].
        query_points_list: chunks [B, Ni, 2], or one tensor split into `num_splits` chunks.
        fine_tracking, fine_chunk: passed to the tracker.

    Returns:
        tracks [B, S, N, 2], visibility [B, S, N] and scores [B, S, N] (None with fine tracking).
    """
    if isinstance(query_points_list, Tensor):
        query_points_list = torch.chunk(query_points_list, num_splits or 1, dim=1)
    tracks, visibility, scores = [], [], []
    for points in query_points_list:
        track, _, vis, score = track_predictor(
            images_feed, points, fmaps=fmaps_feed, fine_tracking=fine_tracking, fine_chunk=fine_chunk
        )
        tracks.append(track)
        visibility.append(vis)
        scores.append(score)
    score = None if scores[-1] is None else torch.cat(scores, dim=2)
    return torch.cat(tracks, dim=2), torch.cat(visibility, dim=2), score
