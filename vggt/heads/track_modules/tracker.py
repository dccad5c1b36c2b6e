"""Iterative point tracker: refines query-point tracks through a sequence of feature maps.

After CoTracker and VGGSfM as used by VGGT; parameter names follow the released VGGT checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from vggt.heads.track_modules.blocks import CorrelationPyramid, EfficientUpdateFormer, map_chunks
from vggt.heads.track_modules.utils import flow_embedding, sample_features, sincos_grid_embedding
from vggt.layers import Mlp
from vggt.utils.chunks import chunk_slices

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


@dataclass(frozen=True)
class TrackState:
    """The tracks between refinement iterations.

    queries: [B, N, 2] query positions (feature-map pixels); coords: [B, S, N, 2] current positions (feature-map
    pixels); track_feats: [B, S, N, C]; query_pos_embed: [B * N, 1, D] embedded query positions; frame_token:
    [1, S, D] the query frame's token, then every other frame's.
    """

    queries: Tensor
    coords: Tensor
    track_feats: Tensor
    query_pos_embed: Tensor
    frame_token: Tensor


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
            space_depth=depth,
            time_depth=depth,
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
    ) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """Track query_points [B, N, 2] (image pixels, frame 0) through fmaps [B, S, C, H / stride, W / stride].

        Returns the tracks after each iteration (a list of `iters` [B, S, N, 2] in image pixels),
        visibility [B, S, N] and confidence [B, S, N] (None without predict_conf), as probabilities
        when apply_sigmoid, else logits.

        `normalized`: fmaps already went through `normalize_fmaps`. The correlations are sampled
        `frames_chunk_size` frames and `queries_chunk_size` tracks at a time, and the update transformer
        is chunked alike (None: all at once); the results do not depend on it. fmaps may live on another
        device (e.g. offloaded to the CPU): each chunk is moved to the tracker's. The steps are public
        (`feature_queries`, `query_features`, `start`, `correlations`, `update`, `readout`) for engines that
        split the frames over processes.
        """
        if fmaps.ndim != 5 or fmaps.shape[2] != self.latent_dim:
            raise ValueError(f"fmaps must be [B, S, {self.latent_dim}, H, W], got shape {tuple(fmaps.shape)}")
        check_query_points(query_points, fmaps.shape[0])
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        if not normalized:
            fmaps = self.normalize_fmaps(fmaps)
        queries = self.feature_queries(query_points)
        state = self.start(queries, self.query_features(fmaps[:, 0], queries), fmaps.shape[1], fmaps.shape[-2:])
        chunks = (frames_chunk_size, queries_chunk_size)
        coord_preds = []
        for _ in range(iters):
            state = self.update(state, self.correlations(fmaps, state, slice(None), chunks), chunks)
            coord_preds.append(state.coords * self.stride)
        vis, conf = self.readout(state, apply_sigmoid)
        return coord_preds, vis, conf

    def feature_queries(self, query_points: Tensor) -> Tensor:
        """Query points [B, N, 2] in image pixels -> feature-map pixels, in at least float32 (also under autocast)."""
        coords_dtype = torch.promote_types(query_points.dtype, torch.float32)
        return query_points.to(coords_dtype) / float(self.stride)

    def query_features(self, first_fmap: Tensor, queries: Tensor) -> Tensor:
        """Features [B, N, C] of normalised feature map first_fmap [B, C, H, W] (frame 0) at queries [B, N, 2]."""
        return sample_features(first_fmap.to(self.query_ref_token.device), queries)

    def start(
        self, queries: Tensor, query_feats: Tensor, num_frames: int, fmap_hw: tuple[int, int] | torch.Size
    ) -> TrackState:
        """The state before the first iteration: every frame's track at its query, with the query's feature."""
        batch, num_tracks, dim = query_feats.shape
        device = self.query_ref_token.device
        # Position of each track's query, embedded: the same for every frame and iteration.
        grid_embed = sincos_grid_embedding(self.transformer_dim, fmap_hw[0], fmap_hw[1], device=device)
        query_pos_embed = sample_features(grid_embed.expand(batch, -1, -1, -1), queries)  # [B, N, D]
        frame_token = torch.cat(
            [self.query_ref_token[:, :1], self.query_ref_token[:, 1:].expand(-1, num_frames - 1, -1)], dim=1
        )  # [1, S, D]
        return TrackState(
            queries=queries,
            coords=queries[:, None].expand(batch, num_frames, num_tracks, 2),
            track_feats=query_feats[:, None].expand(batch, num_frames, num_tracks, dim),
            query_pos_embed=query_pos_embed.reshape(batch * num_tracks, 1, self.transformer_dim),
            frame_token=frame_token,
        )

    def correlations(
        self, fmaps: Tensor, state: TrackState, frames: slice, chunks: tuple[int | None, int | None]
    ) -> Tensor:
        """Correlations [B, s, N, levels * (2r+1)**2] of frames `frames` of the state with fmaps [B, s, C, h, w]
        (those frames' normalised maps), `chunks` = (frames, queries) per step."""
        coords = state.coords.detach()[:, frames]
        return self._correlations(fmaps, state.track_feats[:, frames], coords, *chunks)

    def update(self, state: TrackState, corr: Tensor, chunks: tuple[int | None, int | None]) -> TrackState:
        """One refinement from the correlations corr [B, S, N, L] of every frame: positions and track features
        updated by the update transformer (`chunks` = (frames, queries) per step)."""
        batch, frames, num_tracks, dim = state.track_feats.shape
        frames_chunk_size, queries_chunk_size = chunks
        coords = state.coords.detach()
        corr = corr.transpose(1, 2).reshape(batch * num_tracks, frames, -1)  # [B * N, S, L]
        corr = map_chunks(self.corr_mlp, corr, queries_chunk_size)

        # Displacement from the query, per track: [B * N, S, 2]
        flows = (coords - coords[:, :1]).transpose(1, 2).reshape(batch * num_tracks, frames, 2)
        flow_feats = torch.cat([flow_embedding(flows, dim // 2), flows / FLOW_SCALE, flows / FLOW_SCALE], dim=-1)

        feats = state.track_feats.transpose(1, 2).reshape(batch * num_tracks, frames, dim)
        x = torch.cat([flow_feats.to(corr.dtype), corr, feats.to(corr.dtype)], dim=-1)
        corr_dtype = corr.dtype
        del corr, flow_feats
        x = x + state.query_pos_embed + state.frame_token
        x = x.to(corr_dtype).reshape(batch, num_tracks, frames, self.transformer_dim)

        delta = self.updateformer(x, queries_chunk_size, frames_chunk_size)
        delta = delta.reshape(batch * num_tracks * frames, dim + 2)
        del x
        delta_coords, delta_feats = delta[:, :2], delta[:, 2:]

        feats = feats.reshape(-1, dim) + self.ffeat_updater(self.ffeat_norm(delta_feats))
        track_feats = feats.reshape(batch, num_tracks, frames, dim).transpose(1, 2)

        coords = coords + delta_coords.reshape(batch, num_tracks, frames, 2).transpose(1, 2)
        # The query frame keeps its query positions.
        coords = torch.cat([state.queries[:, None], coords[:, 1:]], dim=1)
        return replace(state, coords=coords, track_feats=track_feats)

    def readout(self, state: TrackState, apply_sigmoid: bool = True) -> tuple[Tensor, Tensor | None]:
        """Visibility [B, S, N] and confidence [B, S, N] (None without predict_conf) of the final state."""
        vis = self.vis_predictor(state.track_feats).squeeze(-1)
        conf = self.conf_predictor(state.track_feats).squeeze(-1) if self.conf_predictor is not None else None
        if apply_sigmoid:
            vis = torch.sigmoid(vis)
            conf = torch.sigmoid(conf) if conf is not None else None
        return vis, conf

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
