"""Token merging for global attention (vggt.runtime.token_merging): exact without merging, exact for duplicates,
never touching the protected tokens; the product path inside a chunked global block equals a dense computation of
the same merge."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from vggt.errors import InputError
from vggt.layers import Block
from vggt.runtime.chunked_block import chunked_block_forward
from vggt.runtime.engine import StreamingEngine
from vggt.runtime.options import StreamingOptions
from vggt.runtime.token_merging import MAX_MERGE_RATIO, TokenMerging, check_merge_ratio, merge_plan

FRAMES, PER_FRAME, PROTECTED, HEADS, DIM = 4, 13, 3, 2, 8


def merged_attention(  # the dense computation the product path (MergePlan) must reproduce
    q: Tensor, k: Tensor, v: Tensor, num_frames: int, protected: int, merge_ratio: float
) -> Tensor:
    """`scaled_dot_product_attention(q, k, v)` [B, heads, S * P, d] with patch tokens merged (module docstring)."""
    if merge_ratio <= 0:
        return F.scaled_dot_product_attention(q, k, v)
    batch, heads, num_tokens, dim = q.shape
    representative, kept = merge_plan(k, num_frames, protected, merge_ratio)
    if kept.shape[1] == num_tokens:
        return F.scaled_dot_product_attention(q, k, v)
    num_kept = kept.shape[1]
    index = representative[:, None, :, None].expand(batch, heads, num_tokens, dim)
    sums = torch.zeros(batch, heads, num_kept, dim, dtype=k.dtype, device=k.device)
    size = torch.zeros(batch, num_kept, dtype=k.dtype, device=k.device).scatter_add_(
        1, representative, torch.ones_like(representative, dtype=k.dtype)
    )
    k_kept = sums.scatter_add(2, index, k) / size[:, None, :, None]
    v_kept = sums.scatter_add(2, index, v) / size[:, None, :, None]
    q_kept = q.gather(2, kept[:, None, :, None].expand(batch, heads, num_kept, dim))
    bias = size.log()[:, None, None, :].to(q.dtype)  # proportional attention
    out_kept = F.scaled_dot_product_attention(q_kept, k_kept, v_kept, attn_mask=bias)
    return out_kept.gather(2, representative[:, None, :, None].expand(batch, heads, num_tokens, dim))


def random_qkv(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = (2, HEADS, FRAMES * PER_FRAME, DIM)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(3)]


def test_no_merging_is_plain_attention():
    q, k, v = random_qkv()
    torch.testing.assert_close(
        merged_attention(q, k, v, FRAMES, PROTECTED, 0.0), F.scaled_dot_product_attention(q, k, v), rtol=0, atol=0
    )


def test_merging_duplicates_changes_nothing():
    """Tokens that are exact copies of their merge partners: proportional attention reproduces full attention."""
    q, k, v = random_qkv(1)
    candidates = torch.arange(PROTECTED, PER_FRAME - 1, 2)  # each candidate copies the next token
    for frame in range(1, FRAMES):
        for tensor in (q, k, v):
            tensor[:, :, frame * PER_FRAME + candidates] = tensor[:, :, frame * PER_FRAME + candidates + 1]
    expected = F.scaled_dot_product_attention(q, k, v)
    merged = merged_attention(q, k, v, FRAMES, PROTECTED, 0.4)
    torch.testing.assert_close(merged, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_plan_merges_the_asked_fraction_and_never_the_protected_tokens(ratio):
    _, k, _ = random_qkv(2)
    representative, kept = merge_plan(k, FRAMES, PROTECTED, ratio)
    patches = PER_FRAME - PROTECTED
    merged_per_frame = min(int(ratio * patches), len(range(PROTECTED, PER_FRAME, 2)))
    assert kept.shape == (2, FRAMES * PER_FRAME - (FRAMES - 1) * merged_per_frame)
    protected = torch.tensor([f * PER_FRAME + t for f in range(FRAMES) for t in range(PROTECTED)])
    first_frame = torch.arange(PER_FRAME)
    for b in range(2):
        kept_set = set(kept[b].tolist())
        assert set(protected.tolist()) <= kept_set and set(first_frame.tolist()) <= kept_set
        # every token is represented by a kept token of its own frame
        owners = kept[b][representative[b]]
        assert (owners // PER_FRAME == torch.arange(FRAMES * PER_FRAME) // PER_FRAME).all()


def test_merged_attention_approximates_full_attention_on_smooth_tokens():
    q, k, v = random_qkv(3)
    # Neighbouring tokens nearly equal (as neighbouring patches of an image are): merging them costs little.
    for tensor in (q, k, v):
        tensor[:, :, 1::2] = tensor[:, :, 0::2][:, :, : tensor[:, :, 1::2].shape[2]] + 0.01 * tensor[:, :, 1::2]
    full = F.scaled_dot_product_attention(q, k, v)
    merged = merged_attention(q, k, v, FRAMES, PROTECTED, 0.3)
    assert (merged - full).abs().max() < 0.05 * full.abs().max()


def _dense_block_with_merging(block: Block, x: Tensor, ratio: float) -> Tensor:
    """`block(x)` for one scene x [1, FRAMES * PER_FRAME, C] with its attention replaced by `merged_attention`:
    every token and head at once, no chunking, no MergePlan."""
    attn = block.attn
    qkv = attn.qkv(block.norm1(x)).reshape(1, x.shape[1], 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    attended = merged_attention(*qkv.unbind(0), FRAMES, PROTECTED, ratio)
    y = x + block.ls1(attn.proj(attended.transpose(1, 2).flatten(2)))
    return y + block.ls2(block.mlp(block.norm2(y)))


@pytest.mark.parametrize("ratio", [0.2, 0.5])
@pytest.mark.parametrize("tokens_chunk, heads_chunk", [(None, None), (5, 1), (PER_FRAME, 2)])
@torch.no_grad()
def test_the_chunked_global_block_with_merging_equals_the_dense_merge(ratio, tokens_chunk, heads_chunk):
    """The product path (chunked_block_forward with a TokenMerging: plan on head-averaged keys, merged keys and
    values per head group, kept queries only, restored outputs) against the dense computation of the same merge."""
    torch.manual_seed(0)
    block = Block(HEADS * DIM, HEADS, mlp_ratio=2.0, init_values=0.5).double().eval()
    x = torch.randn(1, FRAMES * PER_FRAME, HEADS * DIM, dtype=torch.float64)
    # Neighbouring tokens alike (as neighbouring patches are), so that the merge plan has clear winners.
    x[:, 1::2] = x[:, 0::2][:, : x[:, 1::2].shape[1]] + 0.1 * x[:, 1::2]
    out = torch.empty_like(x)
    merge = TokenMerging(FRAMES, PER_FRAME, PROTECTED, ratio)
    chunked_block_forward(block, x, out, lambda tokens: None, tokens_chunk, heads_chunk, merge=merge)
    expected = _dense_block_with_merging(block, x, ratio)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # and the merge really happened: plain attention gives other numbers
    assert not torch.allclose(out, block(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ratio", [-0.1, MAX_MERGE_RATIO + 0.01, True, "0.3"])
def test_merge_ratio_out_of_range_is_refused_by_the_one_check(ratio):
    with pytest.raises(InputError, match="merge_ratio"):
        check_merge_ratio(ratio)
    with pytest.raises(InputError, match="merge_ratio"):
        StreamingEngine(merge_ratio=ratio)


def test_fast_mode_through_the_model_keeps_full_outputs_and_ignores_chunking(golden_dir):
    from vggt.models.vggt import VGGT

    model = VGGT.from_pretrained(golden_dir / "tiny_state_dict.safetensors", preset="tiny").eval()
    images = torch.rand(1, 6, 3, 70, 98, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = model(images, engine=StreamingEngine.auto("cpu"))
        fast = model(images, engine=StreamingEngine.auto("cpu", merge_ratio=0.3))
        rechunked = model(images, engine=StreamingEngine(StreamingOptions.whole().replace(heads_chunk_size=1), 0.3))
    for key in ("depth", "world_points", "pose_enc"):
        assert fast[key].shape == exact[key].shape
        torch.testing.assert_close(rechunked[key], fast[key], rtol=1e-5, atol=1e-5)
    assert not torch.equal(fast["depth"], exact["depth"])  # merging changed something
    relative = (fast["depth"] - exact["depth"]).abs().max() / exact["depth"].abs().max()
    assert relative < 0.05  # and not much (these random weights; see docs/performance.md for the measured table)
