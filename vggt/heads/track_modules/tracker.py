"""Iterative point tracker: refines query-point tracks through a sequence of feature maps.

After CoTracker and VGGSfM as used by VGGT; parameter names follow the released VGGT checkpoint.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from vggt.heads.track_modules.blocks import CorrelationPyramid, EfficientUpdateFormer, map_chunks
from vggt.heads.track_modules.utils import flow_embedding, sample_features, sincos_grid_embedding
from vggt.layers import Mlp
from vggt.layers.chunked_block import chunk_slices

# Flows are also fed raw, divided by the image size VGGT was trained at.
FLOW_SCALE = 518.0


def check_query_points(query_points: Tensor, batch_size: int | None = None) -> None:
    """Raise ValueError unless query_points is [B, N, 2] (with B == batch_size when given) and N >= 1."""
    if query_points.ndim != 3 or query_points.shape[-1] != 2 or query_points.shape[1] == 0:
        raise ValueError(
            f"query_points must be [B, N, 2] pixel (x, y) positions in the first frame with N >= 1, "
            f"got shape {tuple(query_points.shape)}; add a batch axis with query_points[None] if needed"
        )
    if batch_size is not None and query_points.shape[0] != batch_size:
        raise ValueError(
            f"query_points has batch size {query_points.shape[0]} but the images have {batch_size}; "
            "give one [N, 2] set of points per scene"
        )


class FrameShard(Protocol):
    """This process's part of a scene whose frames are split over processes (sequence parallelism)."""

    num_frames: int  # frames of the whole scene
    local: slice  # this process's frames within the scene

    def gather(self, x: Tensor, dim: int) -> Tensor:
        """Every process's `x` (its frames along `dim`) concatenated in frame order."""

    def from_first(self, x: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """`x` of the process holding frame 0 (others pass None), on every process."""


class TrackerPredictor(nn.Module):
    """Tracks query points through S feature maps by iterative refinement.

    Every iteration correlates each track's feature with the feature maps around its current position,
    and a transformer over all tracks and frames predicts updates of positions and track features. The
    first frame holds the query points and its positions are never moved.

    Args:
        latent_dim: channels C of the feature maps.
        hidden_size: width of the update transformer.
        stride: the feature maps have 1 / stride the resolution of the images.
        corr_levels, corr_radius: correlation pyramid depth and window radius.
        depth, num_heads, num_virtual_tracks: update transformer sizes.
        predict_conf: also predict a confidence per track and frame.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        hidden_size: int = 384,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        depth: int = 6,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
        predict_conf: bool = True,
    ) -> None:
        super().__init__()
        if latent_dim % 4:
            raise ValueError(f"latent_dim must be divisible by 4, got {latent_dim}")
        self.latent_dim = latent_dim
        self.stride = stride
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.predict_conf = predict_conf

        # Transformer input per track and frame: flow embedding (+ raw flow twice), correlations, track feature.
        self.transformer_dim = 3 * latent_dim + 4
        corr_dim = corr_levels * (2 * corr_radius + 1) ** 2
        self.corr_mlp = Mlp(corr_dim, hidden_size, latent_dim)
        # Row 0 marks the query frame, row 1 every other frame.
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            output_dim=latent_dim + 2,
            depth=depth,
            num_heads=num_heads,
            num_virtual_tracks=num_virtual_tracks,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1)) if predict_conf else None

    def normalize_fmaps(self, fmaps: Tensor) -> Tensor:
        """LayerNorm over the channels of feature maps [B, S, C, H, W] (what `forward` does first)."""
        return self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)

    def forward(
        self,
        query_points: Tensor,
        fmaps: Tensor,
        iters: int = 4,
        apply_sigmoid: bool = True,
        *,
        normalized: bool = False,
        frames_chunk_size: int | None = None,
        queries_chunk_size: int | None = None,
        shard: FrameShard | None = None,
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """Track query_points [B, N, 2] (image pixels, frame 0) through fmaps [B, S, C, H / stride, W / stride].

        Returns the tracks after each iteration (a list of `iters` [B, S, N, 2] in image pixels),
        visibility [B, S, N] and confidence [B, S, N] (None without predict_conf), as probabilities
        when apply_sigmoid, else logits.

        `normalized`: fmaps already went through `normalize_fmaps`. The correlations are sampled
        `frames_chunk_size` frames and `queries_chunk_size` tracks at a time, and the update transformer
        is chunked alike (None: all at once); the results do not depend on it. fmaps may live on another
        device (e.g. offloaded to the CPU): each chunk is moved to the tracker's.

        `shard`: for sequence parallelism, fmaps hold only this process's frames `shard.local` of the
        scene; correlations are sampled locally and exchanged, the rest runs on every process alike.
        """
        if fmaps.ndim != 5 or fmaps.shape[2] != self.latent_dim:
            raise ValueError(f"fmaps must be [B, S, {self.latent_dim}, H, W], got shape {tuple(fmaps.shape)}")
        check_query_points(query_points, fmaps.shape[0])
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        batch, frames, _, height, width = fmaps.shape
        local = slice(0, frames)
        if shard is not None:
            frames, local = shard.num_frames, shard.local
        num_tracks = query_points.shape[1]
        dim = self.latent_dim
        device = self.query_ref_token.device
        if not normalized:
            fmaps = self.normalize_fmaps(fmaps)

        # Positions live in feature-map pixels; coordinates stay in at least float32 under autocast.
        coords_dtype = torch.promote_types(query_points.dtype, torch.float32)
        queries = query_points.to(coords_dtype) / float(self.stride)  # [B, N, 2]
        coords = queries[:, None].expand(batch, frames, num_tracks, 2)

        has_first = local.start == 0
        query_feats = sample_features(fmaps[:, 0].to(device), queries) if has_first else None  # [B, N, C]
        if shard is not None:
            query_feats = shard.from_first(query_feats, (batch, num_tracks, dim), queries.dtype)
        track_feats = query_feats[:, None].expand(batch, frames, num_tracks, dim)  # [B, S, N, C]

        # Position of each track's query, embedded: the same for every frame and iteration.
        grid_embed = sincos_grid_embedding(self.transformer_dim, height, width, device=device)
        query_pos_embed = sample_features(grid_embed.expand(batch, -1, -1, -1), queries)  # [B, N, D]
        query_pos_embed = query_pos_embed.reshape(batch * num_tracks, 1, self.transformer_dim)
        del grid_embed
        frame_token = torch.cat(
            [self.query_ref_token[:, :1], self.query_ref_token[:, 1:].expand(-1, frames - 1, -1)], dim=1
        )  # [1, S, D]

        chunks = (frames_chunk_size, queries_chunk_size)
        coord_preds = []
        for _ in range(iters):
            coords, track_feats = self._iteration(
                fmaps, coords, track_feats, queries, (query_pos_embed, frame_token), local, shard, chunks
            )
            coord_preds.append(coords * self.stride)

        vis = self.vis_predictor(track_feats).squeeze(-1)  # [B, S, N]
        conf = self.conf_predictor(track_feats).squeeze(-1) if self.conf_predictor is not None else None
        if apply_sigmoid:
            vis = torch.sigmoid(vis)
            conf = torch.sigmoid(conf) if conf is not None else None
        return coord_preds, vis, conf

    def _iteration(
        self,
        fmaps: Tensor,
        coords: Tensor,
        track_feats: Tensor,
        queries: Tensor,
        embeddings: tuple[Tensor, Tensor],
        local: slice,
        shard: FrameShard | None,
        chunks: tuple[int | None, int | None],
    ) -> tuple[Tensor, Tensor]:
        """One refinement: coords [B, S, N, 2] (feature-map pixels) and track_feats [B, S, N, C] updated from the
        correlations around the current positions; `embeddings` are the query positions' [B * N, 1, D] and the
        frames' [1, S, D]; `chunks` the frames and queries per chunk."""
        batch, frames, num_tracks, dim = track_feats.shape
        frames_chunk_size, queries_chunk_size = chunks
        coords = coords.detach()
        corr = self._correlations(fmaps, track_feats[:, local], coords[:, local], frames_chunk_size, queries_chunk_size)
        if shard is not None:
            corr = shard.gather(corr, dim=1)
        corr = corr.transpose(1, 2).reshape(batch * num_tracks, frames, -1)  # [B * N, S, L]
        corr = map_chunks(self.corr_mlp, corr, queries_chunk_size)

        # Displacement from the query, per track: [B * N, S, 2]
        flows = (coords - coords[:, :1]).transpose(1, 2).reshape(batch * num_tracks, frames, 2)
        flow_feats = torch.cat([flow_embedding(flows, dim // 2), flows / FLOW_SCALE, flows / FLOW_SCALE], dim=-1)

        feats = track_feats.transpose(1, 2).reshape(batch * num_tracks, frames, dim)
        x = torch.cat([flow_feats.to(corr.dtype), corr, feats.to(corr.dtype)], dim=-1)
        corr_dtype = corr.dtype
        del corr, flow_feats
        x = x + embeddings[0] + embeddings[1]
        x = x.to(corr_dtype).reshape(batch, num_tracks, frames, self.transformer_dim)

        delta = self.updateformer(x, queries_chunk_size, frames_chunk_size)
        delta = delta.reshape(batch * num_tracks * frames, dim + 2)
        del x
        delta_coords, delta_feats = delta[:, :2], delta[:, 2:]

        feats = feats.reshape(-1, dim) + self.ffeat_updater(self.ffeat_norm(delta_feats))
        track_feats = feats.reshape(batch, num_tracks, frames, dim).transpose(1, 2)

        coords = coords + delta_coords.reshape(batch, num_tracks, frames, 2).transpose(1, 2)
        # The query frame keeps its query positions.
        return torch.cat([queries[:, None], coords[:, 1:]], dim=1), track_feats

    def _correlations(
        self,
        fmaps: Tensor,
        track_feats: Tensor,
        coords: Tensor,
        frames_chunk_size: int | None,
        queries_chunk_size: int | None,
    ) -> Tensor:
        """Correlation windows [B, S, N, levels * (2r+1)**2] of each track's feature around its position."""
        batch, frames, num_tracks = coords.shape[:3]
        device = track_feats.device
        out: Tensor | None = None
        frame_slices = list(chunk_slices(frames, frames_chunk_size))
        query_slices = list(chunk_slices(num_tracks, queries_chunk_size))
        for frames_part in frame_slices:
            pyramid = CorrelationPyramid(fmaps[:, frames_part].to(device), self.corr_levels, self.corr_radius)
            for tracks in query_slices:
                corr = pyramid.sample(track_feats[:, frames_part, tracks], coords[:, frames_part, tracks])
                if len(frame_slices) == 1 and len(query_slices) == 1:
                    return corr
                if out is None:
                    out = corr.new_empty(batch, frames, num_tracks, corr.shape[-1])
                out[:, frames_part, tracks] = corr
            del pyramid
        return out
