"""The aggregator: DINOv2 patch tokens refined by alternating frame-wise and global attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vggt.layers import Block, DinoVisionTransformer, RotaryPositionEmbedding2D, patch_positions
from vggt.models.config import VGGTConfig

# ImageNet statistics the DINOv2 encoder was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expand_per_frame(pair: Tensor, batch: int, frames: int) -> Tensor:
    """[1, 2, X, C] learned pair -> [B * S, X, C]: entry 0 for the first frame, entry 1 for the others."""
    first = pair[:, :1].expand(batch, 1, *pair.shape[2:])
    others = pair[:, 1:].expand(batch, frames - 1, *pair.shape[2:])
    return torch.cat([first, others], dim=1).reshape(batch * frames, *pair.shape[2:])


class Aggregator(nn.Module):
    """Alternating-attention transformer over all frames of a scene.

    Each frame contributes one camera token, `num_register_tokens` register tokens and its
    DINOv2 patch tokens. Block i of `frame_blocks` attends within each frame; block i of
    `global_blocks` attends across all frames. Output i is the concatenation of both block
    outputs, [B, S, P, 2 * C], as the heads expect.
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
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
        # Which block outputs to return; None returns all of them. VGGT sets this to what its heads read.
        self.keep_layers: list[int] | None = None
        self.gradient_checkpointing = True

    def _run_block(self, block: Block, tokens: Tensor, pos: Tensor | None) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, tokens, pos, use_reentrant=False)
        return block(tokens, pos=pos)

    def forward(self, images: Tensor, keep_layers: Sequence[int] | None = None) -> tuple[list[Tensor | None], int]:
        """Images [B, S, 3, H, W] in [0, 1] -> (outputs, patch_start_idx).

        `outputs` has one entry per block pair, [B, S, P, 2C] with P = patch_start_idx + (H/p)(W/p);
        entries not in `keep_layers` (default: `self.keep_layers`, None = all) are None, so that
        inference keeps only what the heads consume.
        """
        B, S, _, H, W = images.shape
        keep = keep_layers if keep_layers is not None else self.keep_layers
        keep = set(range(self.depth)) if keep is None else {i % self.depth for i in keep}

        mean = images.new_tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
        frames = ((images - mean) / std).reshape(B * S, 3, H, W)
        self.patch_embed.gradient_checkpointing = self.gradient_checkpointing
        patch_tokens = self.patch_embed(frames)  # [B*S, (H/p)(W/p), C]

        camera = expand_per_frame(self.camera_token, B, S).to(patch_tokens.dtype)
        registers = expand_per_frame(self.register_token, B, S).to(patch_tokens.dtype)
        tokens = torch.cat([camera, registers, patch_tokens], dim=1)
        P, C = tokens.shape[1], tokens.shape[2]

        pos = None
        if self.rope is not None:
            # Patches sit at grid position + 1; camera and register tokens all sit at (0, 0).
            grid = patch_positions(B * S, H // self.patch_size, W // self.patch_size, images.device) + 1
            special = grid.new_zeros(B * S, self.patch_start_idx, 2)
            pos = torch.cat([special, grid], dim=1)  # [B*S, P, 2]
        frame_pos = pos
        global_pos = None if pos is None else pos.reshape(B, S * P, 2)

        outputs: list[Tensor | None] = []
        for i in range(self.depth):
            tokens = self._run_block(self.frame_blocks[i], tokens.reshape(B * S, P, C), frame_pos)
            frame_out = tokens.reshape(B, S, P, C) if i in keep else None
            tokens = self._run_block(self.global_blocks[i], tokens.reshape(B, S * P, C), global_pos)
            outputs.append(torch.cat([frame_out, tokens.reshape(B, S, P, C)], dim=-1) if i in keep else None)
        return outputs, self.patch_start_idx
