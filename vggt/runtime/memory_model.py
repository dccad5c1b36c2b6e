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


def global_block_working_set(
    tokens: int, dim: int, num_heads: int, options: StreamingOptions, state_bytes: int = 4, kv_bytes: int = 4
) -> int:
    """Bytes `chunked_block_forward` holds beyond its input and output over `tokens` tokens of width `dim`: the keys
    and values of one head group over every token with one token chunk's queries and attention output, or one token
    chunk's MLP working set (keys and values are freed before the MLP runs: the two do not coexist)."""
    heads = num_heads if options.heads_chunk_size is None else min(options.heads_chunk_size, num_heads)
    keys_values = 2 * tokens * dim * kv_bytes * heads // num_heads
    chunk_tokens = tokens if options.tokens_chunk_size is None else min(options.tokens_chunk_size, tokens)
    attention = keys_values + 2 * chunk_tokens * dim * state_bytes
    return max(attention, chunk_tokens * BLOCK_WORKING_SET_WIDTHS * dim * state_bytes)


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
    # Two token buffers of the stream, except where the kept outputs hold them (same dtype, no offload).
    direct = not options.offload and low == state_bytes
    state = 0 if direct else 2 * tokens * c.embed_dim * state_bytes
    block = global_block_working_set(tokens, c.embed_dim, c.num_heads, options, state_bytes, low)
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
        trunk_phase=(0 if options.offload else kept) + state + block + resident_images,
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
        conv = _pi3x_conv_head_bytes(config, pixels) if isinstance(config, Pi3XConfig) else 0
        heads = kept + max(decoders, conv) + pixels * PI3_OUTPUT_VALUES_PER_PIXEL * 4
    else:
        raise TypeError(f"no memory model for the reference forward pass of {type(config).__name__}")
    return StreamingMemory(
        weights=num_parameters * weight_bytes,
        trunk_phase=kept + working + num_frames * 3 * height * width * 4,
        heads_phase=heads + num_frames * 3 * height * width * 4,
        host=0,
    )


def _pi3x_conv_head_bytes(config: object, pixels: int) -> int:
    """Peak bytes of Pi3X's convolutional heads (two, one after the other) over `pixels` pixels, float32."""
    last = config.conv_channels[-1]
    # The last stage's input with its UV grid, its convolutions' output and its residual blocks' hidden layer, on
    # its grid; then the map resized to the image, with the UV grid, and the output branch.
    stage_cells = (PI3X_LAST_STAGE_CELLS_PER_PATCH_SIDE / config.patch_size) ** 2
    stage = stage_cells * (2 * last + 2 + 4 * last)
    full = 2 * (last + 2) + 2 * config.conv_last_channels
    return int(pixels * (stage + full) * 4)


# Values per pixel of the streaming pass's outputs: Pi3's points, local points and confidence (Pi3X adds rays);
# VGGT-Omega's depth and confidence.
PI3_STREAMED_VALUES_PER_PIXEL = 7
PI3X_STREAMED_VALUES_PER_PIXEL = 10
OMEGA_STREAMED_VALUES_PER_PIXEL = 2
# Pi3X's metric decoder holds the projected context of every token with its keys and values (of one block).
METRIC_CONTEXT_COPIES = 3


def estimate_family_streaming_memory(
    config: object,
    num_frames: int,
    height: int,
    width: int,
    options: StreamingOptions,
    *,
    num_parameters: int,
    weight_bytes: int = 4,
) -> StreamingMemory:
    """Peak memory of the streaming pass (`vggt.runtime.pi3_engine`, `vggt.runtime.omega_engine`) of VGGT-Omega,
    Pi3 or Pi3X over `num_frames` frames of height x width, float32, and of the pipeline's conversion of its outputs.

    The trunk phase holds the token buffers the kept pairs end in (the last pair is always kept, so the stream's
    buffers become kept ones) and one chunk's working set: a global block's (`global_block_working_set`) or the
    encoder's on one frame chunk. The heads phase holds the kept outputs or the outputs (frames every head has read
    are given back), one frame chunk of the heads, Pi3X's metric context; then the outputs' conversion to
    cameras, depth and points (as the reference pass's).
    """
    from vggt.models.pi3 import Pi3Config
    from vggt.models.pi3x import Pi3XConfig
    from vggt.models.vggt_omega import OmegaConfig

    pixels = num_frames * height * width
    images = num_frames * 3 * height * width * 4
    frames_chunk = min(options.frames_chunk_size or num_frames, num_frames)
    grid = (height // config.patch_size) * (width // config.patch_size)
    extra = 0
    if isinstance(config, OmegaConfig):
        per_frame, dim, num_heads, encoder_dim = (
            config.patch_start_idx + grid,
            config.embed_dim,
            config.num_heads,
            config.embed_dim,
        )
        kept_layers = len({*config.dense_layers, config.depth - 1}) if config.enable_depth else 1
        finest_cells = frames_chunk * (height // 4) * (width // 4)
        heads_chunk = OMEGA_DENSE_WIDTHS_PER_CELL * finest_cells * config.dense_features * 4
        outputs = pixels * OMEGA_STREAMED_VALUES_PER_PIXEL * 4
        conversion = pixels * OMEGA_OUTPUT_VALUES_PER_PIXEL * 4
    elif isinstance(config, Pi3Config):
        per_frame, dim, num_heads = config.num_register_tokens + grid, config.decoder_dim, config.decoder_num_heads
        encoder_dim, kept_layers = config.encoder_dim, 1
        heads_chunk = (3 + BLOCK_WORKING_SET_WIDTHS) * frames_chunk * per_frame * config.head_dim * 4
        values = PI3_STREAMED_VALUES_PER_PIXEL
        if isinstance(config, Pi3XConfig):
            heads_chunk = max(heads_chunk, _pi3x_conv_head_bytes(config, frames_chunk * height * width))
            extra = METRIC_CONTEXT_COPIES * num_frames * per_frame * config.metric_dim * 4
            values = PI3X_STREAMED_VALUES_PER_PIXEL
        outputs = pixels * values * 4
        conversion = pixels * PI3_OUTPUT_VALUES_PER_PIXEL * 4
    else:
        raise TypeError(f"no memory model for the streaming pass of {type(config).__name__}")
    tokens = num_frames * per_frame
    kept = kept_layers * 2 * tokens * dim * 4
    encoder_tokens = min(options.trunk_frames(per_frame) or num_frames, num_frames) * per_frame
    encoder = (2 + BLOCK_WORKING_SET_WIDTHS) * encoder_tokens * encoder_dim * 4
    block = global_block_working_set(tokens, dim, num_heads, options)
    resident = 0 if options.offload else kept
    heads = (outputs if options.offload else max(kept, outputs)) + heads_chunk + extra
    return StreamingMemory(
        weights=num_parameters * weight_bytes,
        trunk_phase=resident + max(block, encoder) + images,
        heads_phase=max(heads, conversion) + images,
        host=(kept + outputs) if options.offload else 0,
    )
