"""The reference's `vggt.dependency.track_modules.blocks`: the VGGSfM tracker's encoders and update transformer
under the reference's names and arguments."""

from __future__ import annotations

from vggt.dependency.track_modules.encoders import BasicEncoder, ShallowEncoder
from vggt.dependency.track_modules.predictor import UpdateFormer
from vggt.errors import InputError

__all__ = ["BasicEncoder", "EfficientUpdateFormer", "ShallowEncoder"]

# The MLP width of the tracker's transformer blocks, relative to their token width (fixed by the released weights).
TRACKER_MLP_RATIO = 4.0


class EfficientUpdateFormer(UpdateFormer):
    """`UpdateFormer` from the reference's arguments: [B, N, S, input_dim] -> [B, N, S, output_dim]; one exchange
    across tracks after each time block, so `space_depth` must equal `time_depth`."""

    def __init__(
        self,
        space_depth: int = 6,
        time_depth: int = 6,
        input_dim: int = 320,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 130,
        mlp_ratio: float = TRACKER_MLP_RATIO,
        add_space_attn: bool = True,
        num_virtual_tracks: int = 64,
    ) -> None:
        if add_space_attn and space_depth != time_depth:
            raise InputError(f"space_depth must equal time_depth here (got {space_depth} and {time_depth})")
        if mlp_ratio != TRACKER_MLP_RATIO:
            raise InputError(f"the tracker's blocks have mlp_ratio {TRACKER_MLP_RATIO}; got {mlp_ratio}")
        super().__init__(time_depth, input_dim, hidden_size, output_dim, add_space_attn, num_heads, num_virtual_tracks)
