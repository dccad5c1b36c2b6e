"""Building blocks of the tracker: attention blocks, the update transformer and the correlation pyramid.

After CoTracker (facebookresearch/co-tracker) as adapted by VGGT; parameter names follow the released
VGGT checkpoint, including its spelling `virual_tracks`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.errors import InputError
from vggt.heads.track_modules.utils import bilinear_sample
from vggt.layers import Mlp

# Width of the transformer MLPs relative to the token width.
MLP_RATIO = 4.0
# Each correlation pyramid level halves the resolution of the one before.
PYRAMID_POOL = 2


class SelfAttentionBlock(nn.Module):
    """Self-attention and MLP on [B, L, dim] tokens.

    Unlike a usual pre-norm block, the attention residual starts from the normalised tokens:
    `x = norm1(x); x = x + attn(x); x = x + mlp(norm2(x))`, as in the reference tracker.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = MLP_RATIO) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Tokens x [B, L, dim] attend to context [B, M, dim], then an MLP; residuals as in SelfAttentionBlock."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = MLP_RATIO) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """Transformer that predicts coordinate and feature updates for every track and frame.

    Each of the `time_depth` (= `space_depth`) layers attends along time within each track, then across
    tracks within each frame. Tracks do not attend to one another directly: `num_virtual_tracks` learned tokens first
    gather from all tracks, attend among themselves, and the tracks then read from them.

    Input [B, N, S, input_dim] -> output [B, N, S, output_dim].
    """

    def __init__(
        self,
        space_depth: int = 6,
        time_depth: int = 6,
        input_dim: int = 320,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 130,
        mlp_ratio: float = MLP_RATIO,
        add_space_attn: bool = True,
        num_virtual_tracks: int = 64,
    ) -> None:
        if space_depth != time_depth or not add_space_attn:
            raise InputError(
                "EfficientUpdateFormer exchanges across tracks after every time block: pass add_space_attn=True and "
                f"space_depth equal to time_depth (got {space_depth} and {time_depth})"
            )
        depth = time_depth
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))

        def self_blocks() -> nn.ModuleList:
            return nn.ModuleList(SelfAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))

        def cross_blocks() -> nn.ModuleList:
            return nn.ModuleList(CrossAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))

        self.time_blocks = self_blocks()
        self.space_virtual_blocks = self_blocks()
        self.space_point2virtual_blocks = cross_blocks()
        self.space_virtual2point_blocks = cross_blocks()
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Small first updates: the tracker starts from a sensible guess (the query position).
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: Tensor, tracks_chunk_size: int | None = None, frames_chunk_size: int | None = None) -> Tensor:
        """x [B, N, S, input_dim] -> [B, N, S, output_dim].

        The attention along time runs `tracks_chunk_size` tracks at a time and the attention across
        tracks `frames_chunk_size` frames at a time (None: all at once); the result is the same.
        """
        batch, num_tracks, num_frames, _ = x.shape
        tokens = map_chunks(lambda t: self.input_transform(self.input_norm(t)), x, tracks_chunk_size, dim=1)
        init_tokens = tokens

        virtual = self.virual_tracks.expand(batch, -1, num_frames, -1).to(tokens.dtype)
        tokens = torch.cat([tokens, virtual], dim=1)  # [B, N + V, S, hidden]
        num_all = tokens.shape[1]

        for layer, time_block in enumerate(self.time_blocks):
            tokens = map_chunks(time_block, tokens.reshape(batch * num_all, num_frames, -1), tracks_chunk_size)
            # [B * (N + V), S, C] -> [B * S, N + V, C]
            tokens = tokens.reshape(batch, num_all, num_frames, -1).transpose(1, 2)
            tokens = tokens.reshape(batch * num_frames, num_all, -1)
            space = functools.partial(self._space_step, layer=layer, num_tracks=num_tracks)
            tokens = map_chunks(space, tokens, frames_chunk_size)
            tokens = tokens.reshape(batch, num_frames, num_all, -1).transpose(1, 2)  # [B, N + V, S, C]

        tokens = tokens[:, :num_tracks] + init_tokens
        return map_chunks(lambda t: self.flow_head(self.output_norm(t)), tokens, tracks_chunk_size, dim=1)

    def _space_step(self, tokens: Tensor, layer: int, num_tracks: int) -> Tensor:
        """One layer's exchange across tracks within each frame: [F, N + V, C] -> [F, N + V, C]."""
        points, virtual = tokens[:, :num_tracks], tokens[:, num_tracks:]
        virtual = self.space_virtual_blocks[layer](self.space_virtual2point_blocks[layer](virtual, points))
        return torch.cat([self.space_point2virtual_blocks[layer](points, virtual), virtual], dim=1)


def map_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, size: int | None, dim: int = 0) -> Tensor:
    """`fn(x)` for a function that treats the slices of x along `dim` independently, `size` slices at a time.

    Results that take no part in autograd and keep x's shape and dtype overwrite x chunk by chunk (no second
    full-size tensor); the others are concatenated.
    """
    length = x.shape[dim]
    if size is None or size >= length:
        return fn(x)
    starts = range(0, length, size)
    first = fn(x.narrow(dim, 0, size))
    if first.requires_grad:
        rest = [fn(x.narrow(dim, start, min(size, length - start))) for start in starts[1:]]
        return torch.cat([first, *rest], dim=dim)
    same = first.shape == x.narrow(dim, 0, size).shape and first.dtype == x.dtype
    out = x if same else x.new_empty((*x.shape[:dim], length, *first.shape[dim + 1 :]), dtype=first.dtype)
    out.narrow(dim, 0, size).copy_(first)
    del first
    for start in starts[1:]:
        part = fn(x.narrow(dim, start, min(size, length - start)))
        out.narrow(dim, start, part.shape[dim]).copy_(part)
    return out


class CorrelationPyramid:
    """Correlations between track features and a pyramid of feature maps, read around each track.

    Level l average-pools the [B, S, C, H, W] maps by 2**l. For each track and frame, the correlation
    with every pixel of level l is sampled (bilinearly, zero outside) on a (2r+1) x (2r+1) grid of unit
    steps centred at the track's position / 2**l.
    """

    def __init__(self, fmaps: Tensor, num_levels: int, radius: int) -> None:
        self.radius = radius
        self.levels = [fmaps]
        for _ in range(num_levels - 1):
            batch, frames = fmaps.shape[:2]
            fmaps = F.avg_pool2d(fmaps.flatten(0, 1), kernel_size=PYRAMID_POOL, stride=PYRAMID_POOL)
            fmaps = fmaps.unflatten(0, (batch, frames))
            self.levels.append(fmaps)

        steps = torch.arange(-radius, radius + 1, device=fmaps.device, dtype=torch.float32)
        # offsets[a, b] = (steps[a], steps[b]) as (dx, dy): the x offset changes along the first axis,
        # which fixes the order of the (2r+1)**2 correlation channels.
        self.offsets = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1)

    def sample(self, track_feats: Tensor, coords: Tensor) -> Tensor:
        """track_feats [B, S, N, C], coords [B, S, N, 2] at level-0 pixels -> [B, S, N, levels * (2r+1)**2]."""
        batch, frames, num_tracks, channels = track_feats.shape
        window = 2 * self.radius + 1
        offsets = self.offsets.to(coords.dtype).reshape(1, window, window, 2)
        sampled = []
        for level, fmaps in enumerate(self.levels):
            height, width = fmaps.shape[-2:]
            corr = torch.matmul(track_feats, fmaps.flatten(-2)) / math.sqrt(channels)  # [B, S, N, H * W]
            corr = corr.reshape(batch * frames * num_tracks, 1, height, width)
            centres = coords.reshape(-1, 1, 1, 2) / PYRAMID_POOL**level
            corr = bilinear_sample(corr, centres + offsets, padding_mode="zeros")
            sampled.append(corr.reshape(batch, frames, num_tracks, window * window))
        return torch.cat(sampled, dim=-1)
