"""Training-free token merging for global attention (the fast mode: `merge_ratio`).

Before a global attention, a fraction `merge_ratio` of the patch tokens of every frame but the first is merged
into similar tokens of the same frame, and restored after it, so that every output keeps its full resolution.
As in token merging (ToMe, Bolya et al. 2023) the tokens of a frame are split alternately into two sets; each
token of the first set is matched to the token of the second set whose key is the most similar (cosine, averaged
over heads), and the best-matched `merge_ratio` of the frame's patch tokens are merged. A merged group attends as
one token: its key and value are the group's mean, and it enters the softmax with weight `log(size)` ("proportional
attention"), so that a group of identical tokens gives exactly what they would give unmerged. Queries of merged
tokens are dropped: they take the output of the token they were merged into. Camera and register tokens and the
whole first frame (the reference frame) are never merged; `merge_ratio=0` is exactly plain attention.
`chunked_block_forward` applies a `MergePlan` to each head group of a global block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vggt.errors import InputError

# At most half the patch tokens can be merged: each one is merged into a token of the other half.
MAX_MERGE_RATIO = 0.5


def check_merge_ratio(merge_ratio: float) -> None:
    """The one check of the fast mode's fraction of merged tokens: in [0, MAX_MERGE_RATIO] (InputError otherwise)."""
    is_number = isinstance(merge_ratio, (int, float)) and not isinstance(merge_ratio, bool)
    if not is_number or not 0 <= merge_ratio <= MAX_MERGE_RATIO:
        raise InputError("{merge_ratio} must be in [0, {top}], got {value}", top=MAX_MERGE_RATIO, value=merge_ratio)


def merge_plan(keys: Tensor, num_frames: int, protected: int, merge_ratio: float) -> tuple[Tensor, Tensor]:
    """Which token each token is represented by, and the kept tokens.

    Args:
        keys: [B, heads, S * P, d] keys of S frames of P tokens each.
        protected: the first `protected` tokens of every frame (camera, registers) are never merged.

    Returns:
        representative: [B, S * P] index, into the kept tokens, of the token that stands for each token;
        kept: [B, K] indices of the kept tokens (all the same count K per batch element), in increasing order.
    """
    batch, _, num_tokens, _ = keys.shape
    per_frame = num_tokens // num_frames
    patches = per_frame - protected
    first_set = torch.arange(protected, per_frame, 2, device=keys.device)  # merge candidates
    second_set = torch.arange(protected + 1, per_frame, 2, device=keys.device)  # merge targets
    count = min(int(merge_ratio * patches), len(first_set))
    if num_frames < 2 or count < 1 or len(second_set) == 0:
        kept = torch.arange(num_tokens, device=keys.device).expand(batch, num_tokens)
        return kept.clone(), kept.clone()
    mean_key = F.normalize(keys.mean(dim=1).reshape(batch, num_frames, per_frame, -1)[:, 1:], dim=-1)
    similarity = mean_key[:, :, first_set] @ mean_key[:, :, second_set].transpose(-1, -2)  # [B, S-1, |A|, |B|]
    score, target = similarity.max(dim=-1)  # [B, S-1, |A|]
    merged = score.argsort(dim=-1, descending=True)[..., :count]  # [B, S-1, count] positions in the first set

    frame_start = (torch.arange(1, num_frames, device=keys.device) * per_frame)[None, :, None]
    source = frame_start + first_set[merged]  # [B, S-1, count] token indices
    destination = frame_start + second_set[target.gather(-1, merged)]
    owner = torch.arange(num_tokens, device=keys.device).repeat(batch, 1)  # [B, N]
    owner.scatter_(1, source.reshape(batch, -1), destination.reshape(batch, -1))
    is_kept = owner == torch.arange(num_tokens, device=keys.device)
    kept = torch.nonzero(is_kept)[:, 1].reshape(batch, -1)
    position = torch.cumsum(is_kept, dim=1) - 1  # index of each kept token among the kept ones
    return position.gather(1, owner), kept


@dataclass(frozen=True)
class MergePlan:
    """Which tokens of one scene (batch of 1) are merged into which, for every head group of one global block.

    kept: [K] indices of the kept tokens (increasing); representative: [N] index into `kept` of the token standing
    for each token; size: [K] tokens each kept token stands for.
    """

    kept: Tensor
    representative: Tensor
    size: Tensor

    def merge(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Merged keys and values [1, h, K, d] of keys and values [1, h, N, d], and the attention bias [1, 1, 1, K]."""
        index = self.representative[None, None, :, None].expand_as(keys)
        shape = (*keys.shape[:2], len(self.kept), keys.shape[-1])
        # Means accumulated in at least float32 (keys and values may be bf16 under autocast).
        accumulate = torch.promote_types(keys.dtype, torch.float32)
        scale = self.size.to(accumulate)[None, None, :, None]
        merged = [
            (torch.zeros(shape, dtype=accumulate, device=t.device).scatter_add_(2, index, t.to(accumulate)) / scale).to(
                t.dtype
            )
            for t in (keys, values)
        ]
        return merged[0], merged[1], self.size.to(accumulate).log().to(keys.dtype)[None, None, None, :]

    def kept_in(self, tokens: slice) -> Tensor:
        """Positions, inside the slice `tokens`, of its kept tokens."""
        inside = self.kept[(self.kept >= tokens.start) & (self.kept < tokens.stop)]
        return inside - tokens.start

    def restore(self, out: Tensor) -> None:
        """Give every merged token of out [1, N, C] the attention output of the token it was merged into."""
        owner = self.kept[self.representative]
        merged = torch.nonzero(owner != torch.arange(len(owner), device=owner.device))[:, 0]
        out[:, merged] = out[:, owner[merged]]


@dataclass(frozen=True)
class TokenMerging:
    """The fast mode over a scene of `num_frames` frames of `tokens_per_frame` tokens, the first `protected` of
    every frame (camera, registers) never merged, `ratio` of the patch tokens merged."""

    num_frames: int
    tokens_per_frame: int
    protected: int
    ratio: float

    def plan(self, keys: Tensor) -> MergePlan:
        """The merge plan of keys [1, h, N, d] (one scene)."""
        if keys.shape[0] != 1:
            raise ValueError(f"token merging runs on one scene at a time, got a batch of {keys.shape[0]}")
        representative, kept = merge_plan(keys, self.num_frames, self.protected, self.ratio)
        size = torch.bincount(representative[0], minlength=kept.shape[1])
        return MergePlan(kept[0], representative[0], size)
