"""A transformer block evaluated piecewise: token chunks for the token-wise parts, head groups for attention.

`Block.forward` holds the normed tokens, the fused queries, keys and values, the attention output and
the MLP's hidden layer of every token at once. `chunked_block_forward` computes the same numbers with
only one chunk of tokens in those token-wise parts and the keys and values of one group of attention
heads, over all tokens, at a time: only `scaled_dot_product_attention` sees all keys and values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vggt.layers.attention import KEY, QUERY, VALUE, Attention
from vggt.layers.block import Block
from vggt.layers.dinov3 import PrefixRopeAttention
from vggt.runtime.host_memory import scene_buffer
from vggt.runtime.onednn import linear, linear_rows
from vggt.runtime.token_merging import TokenMerging
from vggt.utils.chunks import chunk_slices

# positions(tokens) -> RoPE positions [B, n, 2] of a slice of tokens, or None without RoPE.
PositionsFn = Callable[[slice], Tensor | None]
# gather(keys, values) -> keys and values of every token attended to, [B, h, N_all, head_dim] each.
KeyValueGather = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def chunked_block_forward(
    block: Block,
    x: Tensor,
    out: Tensor,
    positions: PositionsFn,
    tokens_chunk_size: int | None,
    heads_chunk_size: int | None,
    *,
    kv_dtype: torch.dtype | None = None,
    gather: KeyValueGather | None = None,
    kv_buffers: list[Tensor] | None = None,
    merge: TokenMerging | None = None,
) -> Tensor:
    """Write `block(x)` for tokens x [B, N, C] into `out` [B, N, C], which must not overlap x.

    Args:
        positions: RoPE positions of a slice of the tokens.
        tokens_chunk_size, heads_chunk_size: tokens per token-wise step, heads per attention step (None: all).
        kv_dtype: dtype to hold keys and values in (the autocast dtype, which attention would cast them to).
        gather: exchanges keys and values with other processes for sequence parallelism; the queries of
            these tokens then attend to all tokens it returns.
        kv_buffers: a list to keep the keys and values buffers in, reused by later calls of the same
            sizes (a caller running many blocks avoids reallocating them); empty at first.
        merge: the fast mode's token merging (None: exact attention), planned on the keys averaged over all heads.
    """
    attn = block.attn
    token_slices = list(chunk_slices(x.shape[1], tokens_chunk_size))
    head_groups = list(chunk_slices(attn.num_heads, heads_chunk_size))
    rope = _RopeTables(attn, positions)
    plan = None
    if merge is not None:
        mean_key = (
            sum(
                _keys_values(block, x, rope, token_slices, heads, kv_dtype, None, values=False)[0].float().sum(1)
                for heads in head_groups
            )
            / attn.num_heads
        )
        plan = merge.plan(mean_key[:, None])
    for heads in head_groups:
        keys, values = _keys_values(block, x, rope, token_slices, heads, kv_dtype, kv_buffers)
        if gather is not None:
            keys, values = gather(keys, values)
        if plan is not None:
            keys, values, bias = plan.merge(keys, values)
        columns = slice(heads.start * attn.head_dim, heads.stop * attn.head_dim)
        for tokens in token_slices:
            rows = None if plan is None else plan.kept_in(tokens)
            if rows is not None and rows.numel() == 0:
                continue
            queries = rope(project_heads(attn, block.norm1(x[:, tokens]), QUERY, heads), tokens)
            if rows is None:
                attended = F.scaled_dot_product_attention(queries, keys, values)  # [B, h, n, head_dim]
                out[:, tokens, columns] = attended.transpose(1, 2).flatten(2)
            else:  # only the kept tokens' queries attend; merged ones are restored below
                attended = F.scaled_dot_product_attention(queries[:, :, rows], keys, values, attn_mask=bias)
                # (an indexed write does not cast as a slice write does: attention may be bf16 under autocast)
                out[:, tokens.start + rows, columns] = attended.transpose(1, 2).flatten(2).to(out.dtype)
        del keys, values
    if plan is not None:
        plan.restore(out)
    # `out` holds the attention output of every head; finish each chunk in place.
    for tokens in token_slices:
        y = x[:, tokens] + block.ls1(linear(attn.proj, out[:, tokens]))
        out[:, tokens] = y + block.ls2(block.mlp(block.norm2(y), linear=linear))
    return out


def project_heads(attn: Attention | PrefixRopeAttention, x: Tensor, part: int, heads: slice) -> Tensor:
    """Queries, keys or values (`part`) of heads `heads` for normed tokens [B, n, dim] -> [B, h, n, head_dim], from
    only those rows of the projection, QK-normed (without RoPE: `_RopeTables` applies it).

    `Attention` (VGGT, Pi3) projects them itself; `PrefixRopeAttention` (VGGT-Omega's all-frames blocks, which take
    no positions) has a fused projection whose key rows carry no bias.
    """
    if isinstance(attn, Attention):
        return attn.project_heads(x, part, heads, rows_of=linear_rows)
    width = attn.num_heads * attn.head_dim
    rows = slice(part * width + heads.start * attn.head_dim, part * width + heads.stop * attn.head_dim)
    qkv = attn.qkv
    bias = None if qkv.bias is None else (qkv.bias * qkv.bias_mask.to(qkv.bias.dtype))[rows]  # no key bias
    out = F.linear(x, qkv.weight[rows], bias)
    out = out.reshape(*x.shape[:2], heads.stop - heads.start, attn.head_dim).transpose(1, 2)
    return out if part == VALUE else (attn.q_norm if part == QUERY else attn.k_norm)(out)


class _RopeTables:
    """RoPE of a token slice, its tables computed once per slice and shared by every head group and q and k."""

    def __init__(self, attn: Attention, positions: PositionsFn) -> None:
        self.attn = attn
        self.positions = positions
        self.tables: dict[tuple[int, torch.dtype], tuple[Tensor, ...] | None] = {}

    def __call__(self, x: Tensor, tokens: slice) -> Tensor:
        """Rotate queries or keys [B, h, n, head_dim] of the tokens `tokens`."""
        if getattr(self.attn, "rope", None) is None:  # PrefixRopeAttention has none: unrotated here
            return x
        key = (tokens.start, x.dtype)
        if key not in self.tables:
            pos = self.positions(tokens)
            self.tables[key] = None if pos is None else self.attn.rope.tables(pos, x.shape[-1], x.dtype)
        tables = self.tables[key]
        return x if tables is None else self.attn.rope.rotate(x, tables)


def _keys_values(
    block: Block,
    x: Tensor,
    rope: _RopeTables,
    token_slices: list[slice],
    heads: slice,
    kv_dtype: torch.dtype | None,
    kv_buffers: list[Tensor] | None,
    values: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Keys and values of heads `heads` for every token of x [B, N, C]: two [B, h, N, head_dim] tensors (no values
    with `values=False`)."""
    attn = block.attn
    keys = value_store = None
    shape = (x.shape[0], heads.stop - heads.start, x.shape[1], attn.head_dim)
    for tokens in token_slices:
        normed = block.norm1(x[:, tokens])
        k = rope(project_heads(attn, normed, KEY, heads), tokens)
        if keys is None:
            keys, value_store = _kv_storage(shape, kv_dtype or k.dtype, x.device, kv_buffers)
        keys[:, :, tokens] = k
        if values:
            value_store[:, :, tokens] = project_heads(attn, normed, VALUE, heads)
    return keys, value_store if values else None


def _kv_storage(
    shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device, kv_buffers: list[Tensor] | None
) -> tuple[Tensor, Tensor]:
    """Two [B, h, N, head_dim] tensors: views of the kept buffers where they fit, else new ones (then kept)."""
    if kv_buffers:
        keys, values = kv_buffers
        fits = keys.dtype == dtype and keys.shape[1] >= shape[1] and keys.shape[::2] == shape[::2]
        if fits and keys.shape[3] == shape[3]:
            return keys[:, : shape[1]], values[:, : shape[1]]
    keys, values = (scene_buffer(shape, dtype, device) for _ in range(2))
    if kv_buffers is not None:
        kv_buffers[:] = [keys, values]
    return keys, values
