"""Projective positional encoding ("PRoPE", Li et al., "Cameras as Relative Positional Encoding") and Pi3X's
pose-injection block built on it.

PRoPE attention over the patch tokens of C cameras ([B, C * h * w, dim], camera-major, row-major patches) splits
every head's channels in three blocks: the first half is moved by each camera's 4 x 4 projection matrix (queries
by P^T, keys and values by P^-1, the output by P, acting on consecutive groups of 4 channels), so that attention
between two tokens depends on the relative pose of their cameras only; the next quarter and the last quarter
carry a 1D RoPE of the patch column and of the patch row (the "split-half" rotation; the output is rotated back).
Pi3X passes no intrinsics, so P is the camera-from-world transform itself (the paper's "GTA" variant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vggt.layers.block import Block
from vggt.utils.geometry import closed_form_inverse_se3

PROPE_FREQ_BASE = 100.0  # the RoPE base frequency of the reference's PRoPE
HOMOGENEOUS = 4  # the projective part acts on groups of 4 channels (homogeneous 3D coordinates)
PROJECTIVE_SHARE, ROPE_SHARE = 2, 4  # half of a head's channels are projective, a quarter per RoPE axis


def rope_coefficients(positions: Tensor, feat_dim: int, base: float = PROPE_FREQ_BASE) -> tuple[Tensor, Tensor]:
    """cos and sin [N, feat_dim / 2] of 1D RoPE angles for integer positions [N]."""
    num_freqs = feat_dim // 2
    freqs = base ** (-torch.arange(num_freqs, device=positions.device) / num_freqs)
    angles = positions[:, None] * freqs[None, :]
    return torch.cos(angles), torch.sin(angles)


def rope_split(x: Tensor, cos: Tensor, sin: Tensor, inverse: bool = False) -> Tensor:
    """Rotate x [..., N, d] by angles (cos, sin [N, d / 2]) pairing channel i with i + d / 2; `inverse` undoes it."""
    first, second = x.chunk(2, dim=-1)
    if inverse:
        return torch.cat([cos * first - sin * second, sin * first + cos * second], dim=-1)
    return torch.cat([cos * first + sin * second, -sin * first + cos * second], dim=-1)


def project_channels(x: Tensor, matrices: Tensor) -> Tensor:
    """Each camera's matrix [B, C, 4, 4] applied to every group of 4 channels of its tokens x [B, heads, C * n, d]."""
    B, heads, length, d = x.shape
    cameras = matrices.shape[1]
    grouped = x.reshape(B, heads, cameras, length // cameras, d // HOMOGENEOUS, HOMOGENEOUS)
    return torch.einsum("bcij,bhcpkj->bhcpki", matrices, grouped).reshape(x.shape)


class PropeTransforms:
    """The block-diagonal PRoPE transforms of queries, keys/values and outputs for cameras with camera-from-world
    transforms `viewmats` [B, C, 4, 4] on a patch grid `grid_hw`, heads of `head_dim` channels."""

    def __init__(self, viewmats: Tensor, grid_hw: tuple[int, int], head_dim: int) -> None:
        if head_dim % (2 * ROPE_SHARE):
            raise ValueError(f"PRoPE needs a head dimension divisible by {2 * ROPE_SHARE}, got {head_dim}")
        rows, cols = grid_hw
        device = viewmats.device
        self.sizes = [head_dim // PROJECTIVE_SHARE, head_dim // ROPE_SHARE, head_dim // ROPE_SHARE]
        self.projection = viewmats
        self.projection_t = viewmats.transpose(-1, -2)
        self.projection_inv = closed_form_inverse_se3(viewmats)
        self.cols = rope_coefficients(torch.arange(cols, device=device).repeat(rows), self.sizes[1])
        self.rows = rope_coefficients(torch.arange(rows, device=device).repeat_interleave(cols), self.sizes[2])

    def _apply(self, x: Tensor, matrices: Tensor, inverse: bool = False) -> Tensor:
        projective, col_part, row_part = torch.split(x, self.sizes, dim=-1)
        cameras = matrices.shape[1]
        cos_c, sin_c = (t.repeat(cameras, 1) for t in self.cols)
        cos_r, sin_r = (t.repeat(cameras, 1) for t in self.rows)
        return torch.cat(
            [
                project_channels(projective, matrices),
                rope_split(col_part, cos_c, sin_c, inverse),
                rope_split(row_part, cos_r, sin_r, inverse),
            ],
            dim=-1,
        )

    def queries(self, q: Tensor) -> Tensor:
        return self._apply(q, self.projection_t)

    def keys_values(self, kv: Tensor) -> Tensor:
        return self._apply(kv, self.projection_inv)

    def outputs(self, o: Tensor) -> Tensor:
        return self._apply(o, self.projection, inverse=True)


class PoseInjectBlock(Block):
    """Pi3X's pose-injection block: Pi3's decoder block (same parameters) whose attention is PRoPE attention and
    whose two branches are summed without the residual input: `ls1(attn(norm1(x))) + ls2(mlp(norm2(x)))`."""

    def forward(self, x: Tensor, poses: Tensor, grid_hw: tuple[int, int]) -> Tensor:  # type: ignore[override]
        """Patch tokens x [B, C * h * w, dim] of C cameras with camera-to-world poses [B, C, 4, 4] -> the update
        [B, C * h * w, dim] to add to them."""
        attn = self.attn
        B, N, dim = x.shape
        transforms = PropeTransforms(closed_form_inverse_se3(poses), grid_hw, attn.head_dim)
        qkv = attn.qkv(self.norm1(x)).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        q, k = attn.q_norm(q).to(v.dtype), attn.k_norm(k).to(v.dtype)
        out = F.scaled_dot_product_attention(
            transforms.queries(q), transforms.keys_values(k), transforms.keys_values(v)
        )
        out = transforms.outputs(out).transpose(1, 2).reshape(B, N, dim)
        return self.ls1(attn.proj_drop(attn.proj(out))) + self.ls2(self.mlp(self.norm2(x)))
