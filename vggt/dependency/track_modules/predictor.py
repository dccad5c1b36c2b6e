"""The iterative track predictor of VGGSfM (coarse on image feature maps, fine on patch features).

After CoTracker, as VGGT's own tracker (`vggt.heads.track_modules`), whose correlation pyramid, embeddings and
attention blocks it shares; VGGSfM differs in its norms (no affine LayerNorm in the blocks, no input or output
norm in the transformer), its input layout (padded to a width divisible by 4) and its optional space attention.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vggt.heads.track_modules.blocks import CorrelationPyramid, CrossAttentionBlock, SelfAttentionBlock
from vggt.heads.track_modules.utils import flow_embedding, sample_features, sincos_grid_embedding

# VGGSfM's attention blocks normalise without learned parameters, with this epsilon.
BLOCK_NORM_EPS = 1e-6


class TimeOrVirtualBlock(SelfAttentionBlock):
    """VGGSfM's self-attention block: `SelfAttentionBlock` with parameter-free norms."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__(dim, num_heads, mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=BLOCK_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=BLOCK_NORM_EPS)


class PointVirtualBlock(CrossAttentionBlock):
    """VGGSfM's cross-attention block: parameter-free norms on the tokens, a learned one on the context."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__(dim, num_heads, mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=BLOCK_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=BLOCK_NORM_EPS)


class UpdateFormer(nn.Module):
    """[B, N, S, input_dim] -> [B, N, S, output_dim]: attention along time per track and, with `add_space_attn`,
    across tracks per frame through `num_virtual_tracks` learned tokens (one space step after each time block)."""

    def __init__(
        self,
        depth: int,
        input_dim: int,
        hidden_size: int,
        output_dim: int,
        add_space_attn: bool,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.add_space_attn = add_space_attn
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.time_blocks = nn.ModuleList(TimeOrVirtualBlock(hidden_size, num_heads) for _ in range(depth))
        if add_space_attn:
            self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
            self.space_virtual_blocks = nn.ModuleList(TimeOrVirtualBlock(hidden_size, num_heads) for _ in range(depth))
            self.space_point2virtual_blocks = nn.ModuleList(
                PointVirtualBlock(hidden_size, num_heads) for _ in range(depth)
            )
            self.space_virtual2point_blocks = nn.ModuleList(
                PointVirtualBlock(hidden_size, num_heads) for _ in range(depth)
            )

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.input_transform(x)
        init_tokens = tokens
        batch, num_tracks, frames, _ = tokens.shape
        if self.add_space_attn:
            tokens = torch.cat([tokens, self.virual_tracks.expand(batch, -1, frames, -1).to(tokens.dtype)], dim=1)
        num_all = tokens.shape[1]
        for layer, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.reshape(batch * num_all, frames, -1)).reshape(batch, num_all, frames, -1)
            if self.add_space_attn:
                space = tokens.transpose(1, 2).reshape(batch * frames, num_all, -1)
                points, virtual = space[:, :num_tracks], space[:, num_tracks:]
                virtual = self.space_virtual_blocks[layer](self.space_virtual2point_blocks[layer](virtual, points))
                points = self.space_point2virtual_blocks[layer](points, virtual)
                tokens = torch.cat([points, virtual], dim=1).reshape(batch, frames, num_all, -1).transpose(1, 2)
        return self.flow_head(tokens[:, :num_tracks] + init_tokens)


class BaseTrackerPredictor(nn.Module):
    """Tracks query points of frame 0 through feature maps by `iters` rounds of correlation and transformer updates.

    Args:
        stride: feature maps have 1 / stride the resolution of the (possibly downsampled) images.
        corr_levels, corr_radius: correlation pyramid depth and window radius.
        latent_dim: channels of the feature maps; hidden_size: transformer width.
        use_spaceatt: attend across tracks; depth: transformer layers.
        fine: the patch-level refiner (no visibility output).
    """

    def __init__(
        self,
        stride: int = 4,
        corr_levels: int = 5,
        corr_radius: int = 4,
        latent_dim: int = 128,
        hidden_size: int = 384,
        use_spaceatt: bool = True,
        depth: int = 6,
        fine: bool = False,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.fine = fine
        width = corr_levels * (2 * corr_radius + 1) ** 2 + 2 * latent_dim
        # The released weights fix these paddings (the fine model's is a historical quirk).
        width += (4 if width % 2 == 0 else 5) if fine else (4 - width % 4) % 4
        self.transformer_dim = width
        self.updateformer = UpdateFormer(depth, width, hidden_size, latent_dim + 2, add_space_attn=use_spaceatt)
        self.norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        if not fine:
            self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(
        self, query_points: Tensor, fmaps: Tensor, iters: int = 4, return_feat: bool = False, down_ratio: int = 1
    ) -> tuple:
        """query_points [B, N, 2] pixels of frame 0, fmaps [B, S, C, HH, WW].

        Returns:
            tracks after every iteration (a list of [B, S, N, 2] in image pixels) and visibility [B, S, N]
            (None for the fine model); with `return_feat` also the track features [B, S, N, C] and the query
            features [B, N, C].
        """
        batch, num_tracks, _ = query_points.shape
        _, frames, channels, height, width = fmaps.shape
        scale = float(self.stride * max(down_ratio, 1))
        coords = (query_points / scale)[:, None].repeat(1, frames, 1, 1)  # [B, S, N, 2] in feature pixels
        query_coords = coords[:, 0].clone()
        query_feat = sample_features(fmaps[:, 0], query_coords)  # [B, N, C]
        track_feats = query_feat[:, None].repeat(1, frames, 1, 1)
        pyramid = CorrelationPyramid(fmaps, self.corr_levels, self.corr_radius)
        pos_embed = sincos_grid_embedding(self.transformer_dim, height, width, device=fmaps.device)
        query_pos = sample_features(pos_embed.expand(batch, -1, -1, -1), query_coords).reshape(
            -1, 1, self.transformer_dim
        )

        predictions = []
        for _ in range(iters):
            coords = coords.detach()
            corrs = pyramid.sample(track_feats, coords).permute(0, 2, 1, 3).reshape(batch * num_tracks, frames, -1)
            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(batch * num_tracks, frames, 2)
            flows_emb = torch.cat([flow_embedding(flows, self.latent_dim // 2), flows], dim=-1)
            feats = track_feats.permute(0, 2, 1, 3).reshape(batch * num_tracks, frames, self.latent_dim)
            inputs = torch.cat([flows_emb, corrs, feats], dim=2)
            padding = self.transformer_dim - inputs.shape[2]
            inputs = torch.cat([inputs, inputs.new_zeros(*inputs.shape[:2], padding)], dim=2)
            delta = self.updateformer((inputs + query_pos).reshape(batch, num_tracks, frames, -1))
            delta = delta.reshape(batch * num_tracks * frames, -1)
            feats = feats.reshape(-1, self.latent_dim) + self.ffeat_updater(self.norm(delta[:, 2:]))
            track_feats = feats.reshape(batch, num_tracks, frames, self.latent_dim).permute(0, 2, 1, 3)
            coords = coords + delta[:, :2].reshape(batch, num_tracks, frames, 2).permute(0, 2, 1, 3)
            coords[:, 0] = query_coords  # the query frame's positions are given
            predictions.append(coords * scale)

        visibility = None
        if not self.fine:
            visibility = torch.sigmoid(self.vis_predictor(track_feats).reshape(batch, frames, num_tracks))
        if return_feat:
            return predictions, visibility, track_feats, query_feat
        return predictions, visibility
