"""Peak memory of the streaming engine, part by part: what `StreamingEngine.run` needs.

The scene-sized parts are exact byte counts of the buffers the streaming pass allocates; the working
sets of one chunk are calibrated constants (see docs/performance.md, where the model is checked
against measured CPU peaks). The peak is the larger of the trunk phase (aggregator) and the heads phase.
"""

from __future__ import annotations

from dataclasses import dataclass

from vggt.models.config import VGGTConfig
from vggt.runtime.options import StreamingOptions

# Bytes per image pixel of one frame in a dense (DPT) head at its peak, float32: the full-resolution
# 128-channel map, its 32-channel convolution and that one's ReLU (see DPTHead.forward_frames).
DENSE_HEAD_BYTES_PER_PIXEL = 770
# Values per token held by one transformer block at its peak, in units of the width C: the tokens, the
# normed tokens, queries/keys/values, the attention output and the MLP's 4C hidden layer and activation.
BLOCK_WORKING_SET_WIDTHS = 12
# Values per pixel of the dense outputs: depth, its confidence, 3 world coordinates, their confidence.
OUTPUT_VALUES_PER_PIXEL = 6
GIB = 1024**3


@dataclass(frozen=True)
class StreamingMemory:
    """Bytes on the compute device at the peak of each phase, and in host memory (offload)."""

    weights: int
    trunk_phase: int  # beyond the weights: kept outputs, token state, then keys and values or one token chunk
    heads_phase: int  # beyond the weights: kept outputs and outputs (or the larger), one dense-head frame chunk
    host: int  # offloaded kept outputs, outputs and images

    @property
    def device_peak(self) -> int:
        return self.weights + max(self.trunk_phase, self.heads_phase)

    def summary(self) -> str:
        return (
            f"device peak {self.device_peak / GIB:.2f} GiB (weights {self.weights / GIB:.2f}, "
            f"trunk {self.trunk_phase / GIB:.2f}, heads {self.heads_phase / GIB:.2f}), host {self.host / GIB:.2f} GiB"
        )


def estimate_streaming_memory(
    config: VGGTConfig,
    num_frames: int,
    height: int,
    width: int,
    options: StreamingOptions,
    *,
    num_parameters: int,
    trunk_parameters: int,
    trunk_bytes: int = 4,
    head_bytes: int = 4,
    autocast_bytes: int | None = None,
    images_on_device: bool = True,
    discards_read_frames: bool = False,
) -> StreamingMemory:
    """Peak memory of a streaming pass over `num_frames` frames of height x width, without the track head.

    Args:
        num_parameters, trunk_parameters: parameters of the model (without the track head) and of its aggregator.
        trunk_bytes, head_bytes: bytes per weight of the aggregator and of the heads (4 for float32; e.g.
            `model.aggregator.to(torch.bfloat16)` makes the trunk 2). The heads compute in their weights' dtype.
        autocast_bytes: bytes of the autocast dtype (2 for bf16), None without autocast. Autocast over a
            float32 trunk caches a low-precision copy of its weights, keeps the kept outputs, keys and values
            in that dtype, and the token state in float32.
        images_on_device: the input images live on the device (with offload they may stay on the CPU).
        discards_read_frames: the kept outputs give back each frame chunk once the heads have read it (on the
            CPU: `vggt.runtime.host_memory`), so they shrink as the outputs grow and the larger of the two counts.
    """
    c = config
    tokens = num_frames * (c.patch_start_idx + (height // c.patch_size) * (width // c.patch_size))
    state_bytes = 4 if autocast_bytes else trunk_bytes
    low = autocast_bytes or trunk_bytes
    kept = len(c.layers_needed(("camera", "depth", "point"))) * tokens * 2 * c.embed_dim * low
    heads = c.num_heads if options.heads_chunk_size is None else min(options.heads_chunk_size, c.num_heads)
    keys_values = 2 * tokens * c.embed_dim * low * heads // c.num_heads
    # Two token buffers of the stream, except where the kept outputs hold them (same dtype, no offload).
    direct = not options.offload and low == state_bytes
    state = 0 if direct else 2 * tokens * c.embed_dim * state_bytes
    chunk_tokens = tokens if options.tokens_chunk_size is None else min(options.tokens_chunk_size, tokens)
    # Keys and values are freed before the MLP runs over the token chunks: the two do not coexist.
    attention = keys_values + 2 * chunk_tokens * c.embed_dim * state_bytes
    mlp_chunk = chunk_tokens * BLOCK_WORKING_SET_WIDTHS * c.embed_dim * state_bytes
    frames_chunk = num_frames if options.frames_chunk_size is None else min(options.frames_chunk_size, num_frames)
    dense_chunk = frames_chunk * height * width * DENSE_HEAD_BYTES_PER_PIXEL * head_bytes // 4
    outputs = num_frames * height * width * OUTPUT_VALUES_PER_PIXEL * head_bytes
    images = num_frames * 3 * height * width * 4
    cast_copy = trunk_parameters * autocast_bytes if autocast_bytes and trunk_bytes > autocast_bytes else 0
    weights = trunk_parameters * trunk_bytes + (num_parameters - trunk_parameters) * head_bytes + cast_copy
    kept_and_outputs = max(kept, outputs) if discards_read_frames else kept + outputs
    on_device = 0 if options.offload else kept_and_outputs
    resident_images = images if images_on_device else 0
    return StreamingMemory(
        weights=weights,
        trunk_phase=(0 if options.offload else kept) + state + max(attention, mlp_chunk) + resident_images,
        heads_phase=on_device + dense_chunk + resident_images,
        host=(kept + outputs + images) if options.offload else 0,
    )


# --------------------------------------------------------------------------- the other families' reference pass

# Values per pixel of every frame that the outputs of Pi3 / Pi3X and their conversion to geometry hold at once:
# the heads' raw maps, local points, points and their temporaries, rays (Pi3X), confidence, then world points,
# depth, confidence, the focal-length fit's ratios and weights, and the numpy copies of the predictions.
PI3_OUTPUT_VALUES_PER_PIXEL = 45
# Pi3X's convolutional heads end with three upsampling stages, the last at 8 cells per patch side.
PI3X_LAST_STAGE_CELLS_PER_PATCH_SIDE = 8
# VGGT-Omega's outputs and their conversion: depth, confidence, world points and the unprojection's temporaries.
OMEGA_OUTPUT_VALUES_PER_PIXEL = 12
# Values per cell of the dense head's finest level (1/4 of the image), in units of its `features` width: the
# projected level, its 3x3 convolution and the fusion block's residual units (VGGT-Omega's dense head).
OMEGA_DENSE_WIDTHS_PER_CELL = 6
# Frames per chunk of VGGT-Omega's dense head (its forward's default).
OMEGA_DENSE_FRAMES_CHUNK = 8


def estimate_reference_forward_memory(
    config: object, num_frames: int, height: int, width: int, *, num_parameters: int, weight_bytes: int = 4
) -> StreamingMemory:
    """Peak memory of the plain (reference) forward pass of VGGT-Omega, Pi3 or Pi3X (`config`: OmegaConfig,
    Pi3Config or Pi3XConfig) over `num_frames` frames of height x width, in float32 activations.

    The trunk phase holds the token state, the kept block outputs and one block's working set over all tokens
    (global attention runs over every frame at once); the heads phase the kept outputs, the heads' token
    decoders (Pi3) or one chunk of the dense head (VGGT-Omega), the full-resolution convolutional heads (Pi3X)
    over all frames, and the outputs with their conversion to cameras, depth and points.
    """
    from vggt.models.pi3 import Pi3Config
    from vggt.models.pi3x import Pi3XConfig
    from vggt.models.vggt_omega import OmegaConfig

    pixels = num_frames * height * width
    if isinstance(config, OmegaConfig):
        grid = (height // config.patch_size) * (width // config.patch_size)
        tokens = num_frames * (config.patch_start_idx + grid)
        kept_layers = len({*config.dense_layers, config.depth - 1})
        kept = kept_layers * tokens * 2 * config.embed_dim * 4
        working = (2 + BLOCK_WORKING_SET_WIDTHS) * tokens * config.embed_dim * 4
        chunk = min(OMEGA_DENSE_FRAMES_CHUNK, num_frames)
        finest_cells = chunk * (height // 4) * (width // 4)
        dense = OMEGA_DENSE_WIDTHS_PER_CELL * finest_cells * config.dense_features * 4
        heads = kept + dense + pixels * OMEGA_OUTPUT_VALUES_PER_PIXEL * 4
    elif isinstance(config, Pi3Config):
        grid = (height // config.patch_size) * (width // config.patch_size)
        tokens = num_frames * (config.num_register_tokens + grid)
        kept = tokens * 2 * config.decoder_dim * 4
        working = (2 + BLOCK_WORKING_SET_WIDTHS) * tokens * config.decoder_dim * 4
        decoders = (3 + BLOCK_WORKING_SET_WIDTHS) * tokens * config.head_dim * 4
        conv = 0
        if isinstance(config, Pi3XConfig):  # two convolutional heads, one after the other
            last = config.conv_channels[-1]
            # The last stage's input with its UV grid, its convolutions' output and its residual blocks' hidden
            # layer, on its grid; then the map resized to the image, with the UV grid, and the output branch.
            stage_cells = (PI3X_LAST_STAGE_CELLS_PER_PATCH_SIDE / config.patch_size) ** 2
            stage = stage_cells * (2 * last + 2 + 4 * last)
            full = 2 * (last + 2) + 2 * config.conv_last_channels
            conv = int(pixels * (stage + full) * 4)
        heads = kept + max(decoders, conv) + pixels * PI3_OUTPUT_VALUES_PER_PIXEL * 4
    else:
        raise TypeError(f"no memory model for the reference forward pass of {type(config).__name__}")
    return StreamingMemory(
        weights=num_parameters * weight_bytes,
        trunk_phase=kept + working + num_frames * 3 * height * width * 4,
        heads_phase=heads + num_frames * 3 * height * width * 4,
        host=0,
    )
