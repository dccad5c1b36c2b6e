"""The aggregator: DINOv2 patch tokens refined by alternating frame-wise and global attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vggt.layers import Block, DinoVisionTransformer, RotaryPositionEmbedding2D, patch_positions
from vggt.layers.mlp import LinearFn, call_linear
from vggt.layers.vision_transformer import VGGT_ENCODER_OPTIONS
from vggt.models.config import VGGTConfig, aggregator_config

# ImageNet statistics the DINOv2 encoder was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expand_per_frame(pair: Tensor, batch: int, frames: int, includes_first: bool = True) -> Tensor:
    """[1, 2, X, C] learned pair -> [B * S, X, C]: entry 0 for the first frame (if included), entry 1 for the others."""
    others = pair[:, 1:].expand(batch, frames - int(includes_first), *pair.shape[2:])
    if includes_first:
        others = torch.cat([pair[:, :1].expand(batch, 1, *pair.shape[2:]), others], dim=1)
    return others.reshape(batch * frames, *pair.shape[2:])


def slice_expand_and_flatten(token_tensor: Tensor, B: int, S: int) -> Tensor:
    """The reference's name for `expand_per_frame`: [1, 2, X, C] -> [B * S, X, C]."""
    return expand_per_frame(token_tensor, B, S)


class Aggregator(nn.Module):
    """Alternating-attention transformer over all frames of a scene.

    Each frame contributes one camera token, `num_register_tokens` register tokens and its
    DINOv2 patch tokens. Block i of `frame_blocks` attends within each frame; block i of
    `global_blocks` attends across all frames. Output i is the concatenation of both block
    outputs, [B, S, P, 2 * C], as the heads expect.

    `gradient_checkpointing`: in training mode, recompute every block (and the patch encoder's) in the
    backward pass instead of storing its activations (`set_gradient_checkpointing` changes it before a run).
    """

    def __init__(
        self,
        img_size: int | VGGTConfig = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        block_fn: type[nn.Module] = Block,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        patch_embed: str = "dinov2_vitl14_reg",
        aa_order: Sequence[str] = ("frame", "global"),
        aa_block_size: int = 1,
        qk_norm: bool = True,
        rope_freq: float = 100,
        init_values: float = 0.01,
        *,
        gradient_checkpointing: bool = True,
    ) -> None:
        """`Aggregator(config)` as VGGT builds it, or the reference's arguments (see `config.aggregator_config`)."""
        super().__init__()
        if isinstance(img_size, VGGTConfig):
            c = img_size
        else:
            unsupported = dict(block_fn=block_fn is not Block, qkv_bias=not qkv_bias, proj_bias=not proj_bias)
            unsupported["ffn_bias"] = not ffn_bias
            c = aggregator_config(
                img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, num_register_tokens, patch_embed,
                aa_order, aa_block_size, qk_norm, rope_freq, init_values, unsupported,
            )  # fmt: skip
        self.patch_size = c.patch_size
        self.depth = c.depth
        self.patch_start_idx = c.patch_start_idx
        self.patch_embed = DinoVisionTransformer(
            img_size=c.img_size,
            patch_size=c.patch_size,
            embed_dim=c.embed_dim,
            depth=c.patch_embed_depth,
            num_heads=c.patch_embed_num_heads,
            mlp_ratio=c.patch_embed_mlp_ratio,
            num_register_tokens=c.num_register_tokens,
            init_values=c.patch_embed_layerscale,
            gradient_checkpointing=gradient_checkpointing,
            **VGGT_ENCODER_OPTIONS,
        )
        self.rope = RotaryPositionEmbedding2D(c.rope_freq) if c.rope_freq > 0 else None

        def make_block() -> Block:
            return Block(
                c.embed_dim, c.num_heads, c.mlp_ratio, init_values=c.layerscale, qk_norm=c.qk_norm, rope=self.rope
            )

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(c.depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(c.depth))
        # Index 0: the first frame's (reference frame's) tokens; index 1: every other frame's.
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c.embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, c.num_register_tokens, c.embed_dim) * 1e-6)
        self.gradient_checkpointing = gradient_checkpointing

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the blocks (this module's and the patch encoder's) in the backward pass in training mode."""
        self.gradient_checkpointing = enabled
        self.patch_embed.gradient_checkpointing = enabled

    def _run_block(self, block: Block, tokens: Tensor, pos: Tensor | None) -> Tensor:
        if self.gradient_checkpointing and self.training:
            return checkpoint(block, tokens, pos, use_reentrant=False)
        return block(tokens, pos=pos)

    def embed(self, images: Tensor, includes_first: bool = True, linear: LinearFn = call_linear) -> Tensor:
        """Images [B, S, 3, H, W] in [0, 1] -> tokens [B, S, P, C]: camera, registers, patches.

        `includes_first`: the first of these frames is the scene's first (reference) frame. `linear` applies the
        patch encoder's linear layers (`vggt.layers.mlp.LinearFn`).
        """
        B, S, _, H, W = images.shape
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
        frames = ((images - mean) / std).reshape(B * S, 3, H, W)
        patch_tokens = self.patch_embed(frames.to(self.camera_token.dtype), linear=linear)  # [B*S, (H/p)(W/p), C]
        camera = expand_per_frame(self.camera_token, B, S, includes_first).to(patch_tokens.dtype)
        registers = expand_per_frame(self.register_token, B, S, includes_first).to(patch_tokens.dtype)
        tokens = torch.cat([camera, registers, patch_tokens], dim=1)
        return tokens.view(B, S, *tokens.shape[1:])

    def frame_positions(self, height: int, width: int, device: torch.device) -> Tensor | None:
        """RoPE positions [P, 2] (y, x) of one frame's tokens; None without RoPE.

        Patches sit at grid position + 1; camera and register tokens all sit at (0, 0).
        """
        if self.rope is None:
            return None
        grid = patch_positions(1, height // self.patch_size, width // self.patch_size, device)[0] + 1
        return torch.cat([grid.new_zeros(self.patch_start_idx, 2), grid], dim=0)

    def forward(self, images: Tensor, keep_layers: Sequence[int] | None = None) -> tuple[list[Tensor | None], int]:
        """Images [B, S, 3, H, W] in [0, 1] -> (outputs, patch_start_idx).

        `outputs` has one entry per block pair, [B, S, P, 2C] with P = patch_start_idx + (H/p)(W/p).
        `keep_layers`: the block pairs whose outputs to return (negative indices count from the end); the
        others are None. None keeps all of them, as the reference does: `model.aggregator(images)` called
        directly behaves like the reference's; `VGGT.forward` passes the layers its heads read.
        """
        B, S, _, H, W = images.shape
        keep = set(range(self.depth)) if keep_layers is None else {i % self.depth for i in keep_layers}
        tokens = self.embed(images)
        P, C = tokens.shape[2], tokens.shape[3]
        pos = self.frame_positions(H, W, images.device)
        frame_pos = None if pos is None else pos.expand(B * S, P, 2)
        global_pos = None if pos is None else pos.repeat(S, 1).expand(B, S * P, 2)

        outputs: list[Tensor | None] = []
        for i in range(self.depth):
            tokens = self._run_block(self.frame_blocks[i], tokens.reshape(B * S, P, C), frame_pos)
            frame_out = tokens.reshape(B, S, P, C) if i in keep else None
            tokens = self._run_block(self.global_blocks[i], tokens.reshape(B, S * P, C), global_pos)
            outputs.append(torch.cat([frame_out, tokens.reshape(B, S, P, C)], dim=-1) if i in keep else None)
        return outputs, self.patch_start_idx
