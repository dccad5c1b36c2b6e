"""Camera head: iterative refinement of a pose encoding from each frame's camera token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vggt.heads.head_act import POSE_ACTIVATIONS, activate_pose, check_activation
from vggt.layers import Block, Mlp

# Width of each supported pose encoding: translation (3), quaternion (4), field of view (2).
POSE_ENCODING_DIMS = {"absT_quaR_FoV": 9}

# The adaptive LayerNorm of the modulation has no affine parameters and this epsilon (as in DiT).
ADALN_EPS = 1e-6


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """DiT-style feature modulation `x * (1 + scale) + shift`."""
    return x * (1 + scale) + shift


class CameraHead(nn.Module):
    """Predict a pose encoding [B, S, 9] per frame, refined over several iterations.

    Each iteration embeds the current estimate (a learned empty pose at first), turns it into a
    shift, scale and gate that modulate the normalised camera tokens (adaptive LayerNorm), runs
    the transformer trunk over the frames of a scene, and adds the predicted delta to the estimate.
    """

    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        pose_encoding_type: str = "absT_quaR_FoV",
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float | None = 0.01,
        trans_act: str = "linear",
        quat_act: str = "linear",
        fl_act: str = "relu",
    ) -> None:
        super().__init__()
        if pose_encoding_type not in POSE_ENCODING_DIMS:
            raise ValueError(
                f"Unsupported pose encoding type {pose_encoding_type!r}; choose one of {list(POSE_ENCODING_DIMS)}"
            )
        check_activation(trans_act, POSE_ACTIVATIONS, "translation activation")
        check_activation(quat_act, POSE_ACTIVATIONS, "quaternion activation")
        check_activation(fl_act, POSE_ACTIVATIONS, "field-of-view activation")
        self.target_dim = POSE_ENCODING_DIMS[pose_encoding_type]
        self.trans_act = trans_act
        self.quat_act = quat_act
        self.fl_act = fl_act

        self.trunk = nn.Sequential(
            *[Block(dim_in, num_heads, mlp_ratio=mlp_ratio, init_values=init_values) for _ in range(trunk_depth)]
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)

        # Estimate fed to the first iteration, before any prediction exists.
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, self.target_dim))
        self.embed_pose = nn.Linear(self.target_dim, dim_in)
        # Produces shift, scale and gate for the adaptive LayerNorm.
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in, bias=True))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=ADALN_EPS)
        self.pose_branch = Mlp(dim_in, hidden_features=dim_in // 2, out_features=self.target_dim)

    def forward(self, aggregated_tokens_list: list[Tensor | None], num_iterations: int = 4) -> list[Tensor]:
        """Read the camera tokens (token 0 of each frame) of the last aggregator output [B, S, N, dim_in].

        Returns one activated pose encoding [B, S, 9] per iteration, the last being the final estimate.
        """
        if num_iterations < 1:
            raise ValueError(f"num_iterations must be at least 1, got {num_iterations}")
        tokens = aggregated_tokens_list[-1]
        if tokens is None or tokens.ndim != 4:
            raise ValueError(
                "CameraHead reads aggregated_tokens_list[-1], which must be a [B, S, N, C] tensor; got "
                f"{None if tokens is None else tuple(tokens.shape)}"
            )
        pose_tokens = self.token_norm(tokens[:, :, 0])
        return self._refine(pose_tokens, num_iterations)

    def _refine(self, pose_tokens: Tensor, num_iterations: int) -> list[Tensor]:
        """Iterative refinement on normalised camera tokens [B, S, C]."""
        B, S, _ = pose_tokens.shape
        pose_enc: Tensor | None = None
        pose_enc_list = []
        for _ in range(num_iterations):
            if pose_enc is None:
                condition = self.embed_pose(self.empty_pose_tokens.expand(B, S, -1))
            else:
                # No gradient flows back through earlier estimates, only through each delta.
                pose_enc = pose_enc.detach()
                condition = self.embed_pose(pose_enc)

            shift, scale, gate = self.poseLN_modulation(condition).chunk(3, dim=-1)
            tokens = pose_tokens + gate * modulate(self.adaln_norm(pose_tokens), shift, scale)
            tokens = self.trunk(tokens)
            delta = self.pose_branch(self.trunk_norm(tokens))
            pose_enc = delta if pose_enc is None else pose_enc + delta

            pose_enc_list.append(
                activate_pose(pose_enc, trans_act=self.trans_act, quat_act=self.quat_act, fl_act=self.fl_act)
            )
        return pose_enc_list
