"""The reference recipe's building blocks: outlier handling and the multi-scale gradient terms of dense maps.

Constants and order of operations follow facebookresearch/vggt `training/loss.py`, whose numbers the golden
file `loss_io.safetensors` pins down:

- every per-pixel loss has non-finite values zeroed and is clamped to +-100 (`finite_or_zero`);
- quantile filtering drops the per-pixel losses at or above the `valid_range` quantile, once there are more
  than 1000 of them (`filter_by_quantile`);
- "grad": L1 of the finite differences of the masked error, horizontal and vertical, summed over the batch and
  divided by its number of valid pixel channels, averaged over 4 scales (every 2^k-th pixel);
- "normal": 1 - cos between predicted and ground-truth surface normals (4 cross products per pixel), averaged
  over 3 scales;
- "+conf": each gradient element becomes `C * g - 0.2 log C` with the confidence of the later pixel of the
  pair (the reference passes neither the section's gamma nor its alpha to these terms).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

HARD_MAX = 100.0  # per-pixel losses (and ground-truth coordinates) are clamped to +-HARD_MAX
QUANTILE_MIN_ELEMENTS = 1000  # quantile filtering needs more elements than this, before and after
QUANTILE_MAX_ELEMENTS = 100_000_000  # above this the quantile is taken on a random subset ...
QUANTILE_SUBSET = 1_000_000  # ... of this many elements
GRAD_SCALES = 4
NORMAL_SCALES = 3
NORMAL_EPS = 1e-8  # normalisation epsilon of the normals and clamping margin of their cosine
MIN_NORMALS = 10  # fewer valid normals than this give no normal loss at that scale
GRADIENT_CONF_GAMMA = 1.0  # the "+conf" weighting of gradient terms uses these fixed values
GRADIENT_CONF_ALPHA = 0.2


def finite_or_zero(x: Tensor, hard_max: float | None = HARD_MAX) -> Tensor:
    """Zero the non-finite entries of `x`, then clamp it to [-hard_max, hard_max] (no clamp for None)."""
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    return x if hard_max is None else x.clamp(min=-hard_max, max=hard_max)


def nearest_quantile(values: Tensor, q: float) -> Tensor:
    """The `q` quantile of a 1-D tensor with "nearest" interpolation, through kthvalue (no size limit)."""
    k = round(q * (values.numel() - 1)) + 1  # Python's round (half to even), as the reference
    return torch.kthvalue(values, k).values


def filter_by_quantile(values: Tensor, valid_range: float) -> Tensor:
    """Clamp 1-D per-pixel losses at HARD_MAX and keep those below their `valid_range` quantile.

    Left as they are when there are QUANTILE_MIN_ELEMENTS values or fewer, or when fewer than that would remain.
    """
    if values.numel() <= QUANTILE_MIN_ELEMENTS:
        return values
    if values.numel() > QUANTILE_MAX_ELEMENTS:
        values = values.view(-1)[torch.randperm(values.numel(), device=values.device)[:QUANTILE_SUBSET]]
    values = values.clamp(max=HARD_MAX)
    threshold = torch.clamp(nearest_quantile(values.detach(), valid_range), max=HARD_MAX)
    keep = values < threshold
    if keep.sum() > QUANTILE_MIN_ELEMENTS:
        return values[keep]
    return values


def gradient_loss(pred: Tensor, gt: Tensor, mask: Tensor, conf: Tensor | None = None) -> Tensor:
    """L1 of the finite differences of the masked error at one scale.

    Args:
        pred, gt: [N, H, W, C]; mask: [N, H, W] bool; conf: optional [N, H, W].

    Returns:
        Scalar: the sum over every pixel pair and channel divided by the number of valid pixel channels
        (0 when there is none).
    """
    channels = pred.shape[-1]
    mask_c = mask[..., None].expand(-1, -1, -1, channels)
    diff = (pred - gt) * mask_c
    grad_x = (diff[:, :, 1:] - diff[:, :, :-1]).abs() * (mask_c[:, :, 1:] & mask_c[:, :, :-1])
    grad_y = (diff[:, 1:] - diff[:, :-1]).abs() * (mask_c[:, 1:] & mask_c[:, :-1])
    grad_x, grad_y = grad_x.clamp(max=HARD_MAX), grad_y.clamp(max=HARD_MAX)
    if conf is not None:
        conf_c = conf[..., None].expand(-1, -1, -1, channels)
        grad_x = confidence_weighted(grad_x, conf_c[:, :, 1:])
        grad_y = confidence_weighted(grad_y, conf_c[:, 1:])
    divisor = mask_c.sum()
    if divisor == 0:
        return pred.new_zeros(())
    return (grad_x.sum() + grad_y.sum()) / divisor


def confidence_weighted(loss: Tensor, conf: Tensor) -> Tensor:
    return GRADIENT_CONF_GAMMA * loss * conf - GRADIENT_CONF_ALPHA * torch.log(conf)


def point_map_to_normals(points: Tensor, mask: Tensor, eps: float = NORMAL_EPS) -> tuple[Tensor, Tensor]:
    """Unit normals from the 4 cross products of neighbour directions (up x left, left x down, down x right,
    right x up), each valid where the pixel and both neighbours are.

    Args:
        points: [N, H, W, 3]; mask: [N, H, W] bool.

    Returns:
        normals [4, N, H, W, 3] and valid [4, N, H, W].
    """
    padded = F.pad(points.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
    padded_mask = F.pad(mask, (1, 1, 1, 1))

    def shifted(t: Tensor, dy: int, dx: int) -> Tensor:
        height, width = t.shape[1] - 2, t.shape[2] - 2
        return t[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    centre = shifted(padded, 0, 0)
    up, left, down, right = (shifted(padded, dy, dx) - centre for dy, dx in ((-1, 0), (0, -1), (1, 0), (0, 1)))
    m_centre = shifted(padded_mask, 0, 0)
    m_up, m_left, m_down, m_right = (shifted(padded_mask, dy, dx) for dy, dx in ((-1, 0), (0, -1), (1, 0), (0, 1)))
    normals = torch.stack(
        [torch.cross(up, left, dim=-1), torch.cross(left, down, dim=-1),
         torch.cross(down, right, dim=-1), torch.cross(right, up, dim=-1)]
    )  # fmt: skip
    valid = torch.stack(
        [m_up & m_centre & m_left, m_left & m_centre & m_down, m_down & m_centre & m_right, m_right & m_centre & m_up]
    )
    return F.normalize(normals, p=2, dim=-1, eps=eps), valid


def normal_loss(pred: Tensor, gt: Tensor, mask: Tensor, conf: Tensor | None = None) -> Tensor:
    """Mean `1 - cos` between predicted and ground-truth normals at one scale (0 with < MIN_NORMALS normals).

    Args:
        pred, gt: [N, H, W, 3] point maps; mask: [N, H, W] bool; conf: optional [N, H, W].
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred_normals, pred_valid = point_map_to_normals(pred, mask)
        gt_normals, gt_valid = point_map_to_normals(gt, mask)
    valid = pred_valid & gt_valid
    if valid.sum() < MIN_NORMALS:
        return pred.new_zeros(())
    cosine = (pred_normals[valid] * gt_normals[valid]).sum(dim=-1)
    loss = finite_or_zero(1 - cosine.clamp(-1 + NORMAL_EPS, 1 - NORMAL_EPS))
    if conf is not None:
        loss = confidence_weighted(loss, conf[None].expand(4, -1, -1, -1)[valid])
    return loss.mean()


def multi_scale(
    loss_fn: Callable[..., Tensor], scales: int, pred: Tensor, gt: Tensor, mask: Tensor, conf: Tensor | None
) -> Tensor:
    """Mean of `loss_fn` over `scales` subsamplings (every 2^k-th row and column, k = 0 .. scales-1)."""
    total = pred.new_zeros(())
    for scale in range(scales):
        step = 2**scale
        total = total + loss_fn(
            pred[:, ::step, ::step],
            gt[:, ::step, ::step],
            mask[:, ::step, ::step],
            conf=None if conf is None else conf[:, ::step, ::step],
        )
    return total / scales


def dense_gradient_term(gradient_loss_fn: str, pred: Tensor, gt: Tensor, mask: Tensor, conf: Tensor) -> Tensor:
    """The multi-scale gradient term `gradient_loss_fn` ("grad", "normal", with "+conf" optional).

    Args:
        pred, gt: [B, S, H, W, C]; mask: [B, S, H, W] bool; conf: [B, S, H, W].
    """
    pred, gt, mask, conf = (t.flatten(0, 1) for t in (pred, gt, mask, conf))  # frames of all samples: [B*S, ...]
    with_conf = conf if "conf" in gradient_loss_fn else None
    if gradient_loss_fn.startswith("normal"):
        return multi_scale(normal_loss, NORMAL_SCALES, pred, gt, mask, with_conf)
    return multi_scale(gradient_loss, GRAD_SCALES, pred, gt, mask, with_conf)
