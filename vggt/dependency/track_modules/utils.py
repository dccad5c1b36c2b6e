"""The reference's `vggt.dependency.track_modules.utils`: the tracker's embeddings and sampling (shared with the
track head's, `vggt.heads.track_modules.utils`)."""

from vggt.heads.track_modules.utils import (
    bilinear_sampler,
    get_1d_sincos_pos_embed_from_grid,
    get_2d_embedding,
    get_2d_sincos_pos_embed,
    get_2d_sincos_pos_embed_from_grid,
    sample_features4d,
)

__all__ = [
    "bilinear_sampler",
    "get_1d_sincos_pos_embed_from_grid",
    "get_2d_embedding",
    "get_2d_sincos_pos_embed",
    "get_2d_sincos_pos_embed_from_grid",
    "sample_features4d",
]
