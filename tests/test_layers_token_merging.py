"""Token merging for global attention (vggt.layers.token_merging): exact without merging, exact for duplicates,
never touching the protected tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vggt.layers.token_merging import merge_plan, merged_attention

FRAMES, PER_FRAME, PROTECTED, HEADS, DIM = 4, 13, 3, 2, 8


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


def test_fast_mode_through_the_model_keeps_full_outputs_and_ignores_chunking(golden_dir):
    from vggt.models.streaming import StreamingOptions
    from vggt.models.vggt import VGGT

    model = VGGT.from_pretrained(golden_dir / "tiny_state_dict.safetensors", preset="tiny").eval()
    images = torch.rand(1, 6, 3, 70, 98, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = model(images, streaming=StreamingOptions.auto("cpu"))
        fast = model(images, streaming=StreamingOptions.auto("cpu").replace(merge_ratio=0.3))
        rechunked = model(images, streaming=StreamingOptions.whole().replace(merge_ratio=0.3, heads_chunk_size=1))
    for key in ("depth", "world_points", "pose_enc"):
        assert fast[key].shape == exact[key].shape
        torch.testing.assert_close(rechunked[key], fast[key], rtol=1e-5, atol=1e-5)
    assert not torch.equal(fast["depth"], exact["depth"])  # merging changed something
    relative = (fast["depth"] - exact["depth"]).abs().max() / exact["depth"].abs().max()
    assert relative < 0.05  # and not much (these random weights; see docs/performance.md for the measured table)
