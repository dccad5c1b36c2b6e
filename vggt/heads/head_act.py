"""Output activations of the heads: pose encodings, dense predictions and their confidences."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POSE_ACTIVATIONS = ("linear", "inv_log", "exp", "relu")
DENSE_ACTIVATIONS = ("norm_exp", "norm", "exp", "relu", "inv_log", "xy_inv_log", "sigmoid", "linear")
CONF_ACTIVATIONS = ("expp1", "expp0", "sigmoid")

# Smallest vector length `norm_exp` divides by.
NORM_EPS = 1e-8

# Slices of the 9-d pose encoding `absT_quaR_FoV`: translation, quaternion, field of view.
TRANSLATION_SLICE = slice(0, 3)
QUATERNION_SLICE = slice(3, 7)
FOV_SLICE = slice(7, None)


def inverse_log_transform(y: Tensor) -> Tensor:
    """`sign(y) * (exp(|y|) - 1)`: the inverse of `sign(x) * log(1 + |x|)`."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


def check_activation(name: str, choices: tuple[str, ...], what: str) -> None:
    """Raise a ValueError naming the valid choices when `name` is not one of them."""
    if name not in choices:
        raise ValueError(f"Unknown {what} {name!r}; choose one of {list(choices)}")


def base_pose_act(pose_enc: Tensor, act_type: str = "linear") -> Tensor:
    """One pose-encoding part [..., k] through `act_type`: linear, inv_log, exp or relu."""
    if act_type == "linear":
        return pose_enc
    if act_type == "inv_log":
        return inverse_log_transform(pose_enc)
    if act_type == "exp":
        return torch.exp(pose_enc)
    if act_type == "relu":
        return F.relu(pose_enc)
    raise ValueError(f"Unknown pose activation {act_type!r}; choose one of {list(POSE_ACTIVATIONS)}")


def activate_pose(
    pred_pose_enc: Tensor, trans_act: str = "linear", quat_act: str = "linear", fl_act: str = "linear"
) -> Tensor:
    """Activate the translation, quaternion and field-of-view parts of a [..., 9] pose encoding."""
    return torch.cat(
        [
            base_pose_act(pred_pose_enc[..., TRANSLATION_SLICE], trans_act),
            base_pose_act(pred_pose_enc[..., QUATERNION_SLICE], quat_act),
            base_pose_act(pred_pose_enc[..., FOV_SLICE], fl_act),
        ],
        dim=-1,
    )


def activate_head(out: Tensor, activation: str = "norm_exp", conf_activation: str = "expp1") -> tuple[Tensor, Tensor]:
    """Split a [N, C, H, W] head output into activated values [N, H, W, C-1] and confidence [N, H, W].

    The last channel is the confidence; the others are the prediction (depth, or xyz points).
    """
    fmap = out.permute(0, 2, 3, 1)
    values, conf = fmap[..., :-1], fmap[..., -1]

    if activation == "norm_exp":
        length = values.norm(dim=-1, keepdim=True).clamp(min=NORM_EPS)
        values = values / length * torch.expm1(length)
    elif activation == "norm":
        values = values / values.norm(dim=-1, keepdim=True)
    elif activation == "exp":
        values = torch.exp(values)
    elif activation == "relu":
        values = F.relu(values)
    elif activation == "inv_log":
        values = inverse_log_transform(values)
    elif activation == "xy_inv_log":
        xy, z = values.split([values.shape[-1] - 1, 1], dim=-1)
        z = inverse_log_transform(z)
        values = torch.cat([xy * z, z], dim=-1)
    elif activation == "sigmoid":
        values = torch.sigmoid(values)
    elif activation != "linear":
        raise ValueError(f"Unknown dense activation {activation!r}; choose one of {list(DENSE_ACTIVATIONS)}")

    if conf_activation == "expp1":
        conf = 1 + conf.exp()
    elif conf_activation == "expp0":
        conf = conf.exp()
    elif conf_activation == "sigmoid":
        conf = torch.sigmoid(conf)
    else:
        raise ValueError(f"Unknown confidence activation {conf_activation!r}; choose one of {list(CONF_ACTIVATIONS)}")
    return values, conf
