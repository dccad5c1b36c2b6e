"""The aggregator: DINOv2 patch tokens refined by alternating frame-wise and global attention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vggt.layers import Block, DinoVisionTransformer, RotaryPositionEmbedding2D, patch_positions
from vggt.layers.chunked_block import KeyValueGather, chunk_slices, chunked_block_forward
from vggt.layers.token_merging import TokenMerging
from vggt.models import progress
from vggt.models.config import VGGTConfig, aggregator_config
from vggt.models.streaming import KeptOutputs, StreamingOptions, autocast_dtype
from vggt.utils.host_memory import release_freed_host_memory, scene_buffer

# ImageNet statistics the DINOv2 encoder was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expand_per_frame(pair: Tensor, batch: int, frames: int, includes_first: bool = True) -> Tensor:
    """[1, 2, X, C] learned pair -> [B * S, X, C]: entry 0 for the first frame (if included), entry 1 for the others."""
    others = pair[:, 1:].expand(batch, frames - int(includes_first), *pair.shape[2:])
    if includes_first:
        others = torch.cat([pair[:, :1].expand(batch, 1, *pair.shape[2:]), others], dim=1)
    return others.reshape(batch * frames, *pair.shape[2:])


class Aggregator(nn.Module):
    """Alternating-attention transformer over all frames of a scene.

    Each frame contributes one camera token, `num_register_tokens` register tokens and its
    DINOv2 patch tokens. Block i of `frame_blocks` attends within each frame; block i of
    `global_blocks` attends across all frames. Output i is the concatenation of both block
    outputs, [B, S, P, 2 * C], as the heads expect.
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

    def _keep(self, keep_layers: Sequence[int] | None) -> set[int]:
        keep = keep_layers if keep_layers is not None else self.keep_layers
        return set(range(self.depth)) if keep is None else {i % self.depth for i in keep}

    def embed(self, images: Tensor, includes_first: bool = True) -> Tensor:
        """Images [B, S, 3, H, W] in [0, 1] -> tokens [B, S, P, C]: camera, registers, patches.

        `includes_first`: the first of these frames is the scene's first (reference) frame.
        """
        B, S, _, H, W = images.shape
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
        frames = ((images - mean) / std).reshape(B * S, 3, H, W)
        self.patch_embed.gradient_checkpointing = self.gradient_checkpointing
        patch_tokens = self.patch_embed(frames.to(self.camera_token.dtype))  # [B*S, (H/p)(W/p), C]
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

    def forward(
        self, images: Tensor, keep_layers: Sequence[int] | None = None, streaming: StreamingOptions | None = None
    ) -> tuple[list[Tensor | None] | KeptOutputs, int]:
        """Images [B, S, 3, H, W] in [0, 1] -> (outputs, patch_start_idx).

        `outputs` has one entry per block pair, [B, S, P, 2C] with P = patch_start_idx + (H/p)(W/p);
        entries not in `keep_layers` (default: `self.keep_layers`, None = all) are None, so that
        inference keeps only what the heads consume. With `streaming`, the pass of `forward_streaming`,
        which returns the kept outputs as a KeptOutputs.
        """
        if streaming is not None:
            return self.forward_streaming(images, streaming, keep_layers)
        B, S, _, H, W = images.shape
        keep = self._keep(keep_layers)
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

    @torch.no_grad()
    def streaming_frame_slices(self, frames: int, height: int, width: int, options: StreamingOptions) -> list[slice]:
        """The frame chunks of a streaming pass's patch encoder and frame-wise blocks over `frames` frames."""
        tokens_per_frame = self.patch_start_idx + (height // self.patch_size) * (width // self.patch_size)
        return list(chunk_slices(frames, options.trunk_frames(tokens_per_frame)))

    def forward_streaming(
        self,
        images: Tensor,
        options: StreamingOptions,
        keep_layers: Sequence[int] | None = None,
        *,
        includes_first: bool = True,
        gather: KeyValueGather | None = None,
    ) -> tuple[KeptOutputs, int]:
        """The outputs of `forward`, computed in chunks (see StreamingOptions) and stored in a KeptOutputs.

        Frame-wise work runs `options.trunk_frames(tokens per frame)` frames at a time; each global block runs
        through `chunked_block_forward`. `images` may live on the CPU while the model is on a GPU.
        For sequence parallelism, `includes_first` says whether these frames start with the scene's
        first frame, and `gather` exchanges the global blocks' keys and values with the other ranks.
        """
        B, S, _, H, W = images.shape
        device = self.camera_token.device
        keep = self._keep(keep_layers)
        frame_slices = self.streaming_frame_slices(S, H, W, options)
        state: Tensor | None = None
        for frames in frame_slices:
            tokens = self.embed(images[:, frames].to(device, non_blocking=True), includes_first and frames.start == 0)
            if state is None:
                state = scene_buffer((B, S, *tokens.shape[2:]), tokens.dtype, device)
            state[:, frames] = tokens
            del tokens
            progress.advance()
        P, C = state.shape[2], state.shape[3]
        kept_dtype = autocast_dtype(device) or state.dtype
        adopt = kept_dtype == state.dtype and not options.offload
        kept = KeptOutputs(self.depth, sorted(keep), (B, S, P, C), kept_dtype, device, options.offload, adopt)
        runner = _StreamingTrunk(self, kept, frame_slices, self.frame_positions(H, W, device), options, gather)
        runner.run(state)
        return kept, self.patch_start_idx


@dataclass
class _StreamingTrunk:
    """The alternating blocks of a streaming forward pass, with as few full-size token buffers as possible.

    Two token buffers of our own carry the stream, reused from layer to layer. Where the kept outputs
    share the stream's dtype and device, a kept layer simply keeps the two buffers its blocks wrote
    (the frame block's and the global block's output): no copy, and nothing scene-sized is ever freed
    and reallocated (which the CPU allocator would not give back to the system).
    """

    agg: Aggregator
    kept: KeptOutputs
    frame_slices: list[slice]
    frame_pos: Tensor | None
    options: StreamingOptions
    gather: KeyValueGather | None
    spares: list[Tensor] = field(default_factory=list)
    batch: int = 1

    def _plain(self, like: Tensor) -> Tensor:
        """A token buffer of our own: a released one if any, else a new one."""
        if self.spares:
            return self.spares.pop()
        return scene_buffer(like.shape, like.dtype, like.device)

    def _global_positions(self, tokens: slice) -> Tensor | None:
        if self.frame_pos is None:
            return None
        index = torch.arange(tokens.start, tokens.stop, device=self.frame_pos.device) % self.frame_pos.shape[0]
        return self.frame_pos[index].expand(self.batch, -1, -1)

    def _frame_blocks(self, i: int, state: Tensor, dest: Tensor) -> None:
        B, _, P, C = state.shape
        for frames in self.frame_slices:
            chunk = state[:, frames].reshape(-1, P, C)
            pos = None if self.frame_pos is None else self.frame_pos.expand(chunk.shape[0], P, 2)
            dest[:, frames] = self.agg.frame_blocks[i](chunk, pos=pos).view(B, -1, P, C)

    def _store(self, i: int, second: bool, tokens: Tensor) -> None:
        """Hand a kept layer's half to the kept outputs: the buffer itself, or a copy frame chunk by frame chunk."""
        if self.kept.adopts:
            self.kept.adopt(i, second, tokens)
            return
        P = tokens.shape[2]
        for frames in self.frame_slices:
            part = slice(frames.start * P, frames.stop * P)
            self.kept.write(i, second, part, tokens[:, frames].flatten(1, 2))

    @staticmethod
    def _block_done(device: torch.device) -> None:
        progress.advance()
        if device.type == "cpu":
            # Give back the heap pages the block's temporaries left free: glibc would keep up to 64 MiB
            # of them resident, by an amount that depends on the scene (host_memory explains why).
            release_freed_host_memory()

    def _token_merging(self, num_frames: int, tokens_per_frame: int) -> TokenMerging | None:
        """The fast mode's merging of the global blocks' tokens, None for the exact model."""
        if self.options.merge_ratio <= 0:
            return None
        if self.gather is not None:
            raise ValueError("merge_ratio is not supported with sequence parallelism; run in one process")
        return TokenMerging(num_frames, tokens_per_frame, self.agg.patch_start_idx, self.options.merge_ratio)

    def run(self, state: Tensor) -> None:
        """Run every block pair on state [B, S, P, C] (consumed), filling the kept outputs."""
        self.batch = state.shape[0]
        kv_dtype = autocast_dtype(state.device)
        kv_buffers: list[Tensor] = []
        merge = self._token_merging(state.shape[1], state.shape[2])
        owned = True  # whether `state` may be overwritten (not handed to the kept outputs)
        for i in range(self.agg.depth):
            adopted = i in self.kept.layers and self.kept.adopts
            dest = state if owned else self._plain(state)
            self._frame_blocks(i, state, dest)
            self._block_done(state.device)
            if i in self.kept.layers:
                self._store(i, False, dest)
            out = self._plain(dest)
            chunked_block_forward(
                self.agg.global_blocks[i],
                dest.flatten(1, 2),
                out.flatten(1, 2),
                self._global_positions,
                self.options.tokens_chunk_size,
                self.options.heads_chunk_size,
                kv_dtype=kv_dtype,
                gather=self.gather,
                kv_buffers=kv_buffers,
                merge=merge,
            )
            self._block_done(state.device)
            if i in self.kept.layers:
                self._store(i, True, out)
            if not adopted:
                self.spares.append(dest)
            state, owned = out, not adopted
        self.spares.clear()
