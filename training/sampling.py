"""Which samples each training step reads: the data roots and their weights (`DatasetSource`), the batch sampler
with a constant frame budget per GPU, sharded over ranks and reproducible from (seed, epoch), the keys it hands
the datasets, and nearby-frame selection for video-like datasets (the reference's expand ratio). See
`training.data` for the batches they become."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import Sampler

from vggt.data.augment import AugmentConfig

PAPER_FRAMES_PER_GPU = 48
PAPER_NUM_FRAMES_RANGE = (2, 24)
DATASET_FORMATS = ("folders", "vkitti2", "co3d")


class SampleKey(NamedTuple):
    """What the batch sampler asks the dataset for: everything a sample depends on."""

    scene_index: int
    num_frames: int
    aspect_ratio: float  # height / width of the output images
    seed: int  # frame choice and augmentation


def nearby_frame_ids(num_available: int, num_frames: int, expand_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """An anchor frame and `num_frames - 1` others from within int(num_frames * expand_ratio) frames of it
    (with repeats only when that window holds too few): [num_frames] frame indices, anchor first."""
    anchor = int(rng.integers(num_available))
    reach = max(1, int(num_frames * expand_ratio))
    window = np.arange(max(0, anchor - reach), min(num_available, anchor + reach + 1))
    window = window[window != anchor]
    if window.size == 0:
        return np.full(num_frames, anchor)
    others = rng.choice(window, size=num_frames - 1, replace=window.size < num_frames - 1)
    return np.concatenate([[anchor], others])


def sample_seed(*entropy: int) -> int:
    """A 63-bit seed derived from integers (seed, epoch, step, position)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class FrameBudgetBatchSampler(Sampler[list[SampleKey]]):
    """Batches of SampleKeys with a constant number of frames per GPU, sharded over ranks.

    Each step draws a number of frames S from `num_frames_range` and an aspect ratio from `aspect_range`;
    the batch size per rank is `frames_per_gpu // S`, and the global batch of `world_size` times that many
    scenes is taken from a stream of shuffled scene indices; rank r gets the r-th slice. Everything comes
    from (seed, epoch): ranks agree without communication, and `batch_keys(epoch)` is reproducible.
    """

    def __init__(
        self,
        num_scenes: int,
        frames_per_gpu: int = PAPER_FRAMES_PER_GPU,
        num_frames_range: tuple[int, int] = PAPER_NUM_FRAMES_RANGE,
        aspect_range: tuple[float, float] = AugmentConfig.aspect_range,
        batches_per_epoch: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        scene_probabilities: np.ndarray | None = None,
    ):
        low, high = num_frames_range
        if not 1 <= low <= high:
            raise ValueError(f"num_frames range {num_frames_range} must satisfy 1 <= low <= high")
        if high > frames_per_gpu:
            raise ValueError(f"frames_per_gpu {frames_per_gpu} is below the largest sample ({high} frames)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if num_scenes < 1:
            raise ValueError("the dataset has no scenes")
        self.num_scenes = num_scenes
        self.frames_per_gpu = frames_per_gpu
        self.num_frames_range = (int(low), int(high))
        self.aspect_range = tuple(aspect_range)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.scene_probabilities = scene_probabilities
        if batches_per_epoch is None:
            typical_batch = frames_per_gpu // ((low + high) // 2)
            batches_per_epoch = math.ceil(num_scenes / (typical_batch * world_size))
        self.batches_per_epoch = max(1, int(batches_per_epoch))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[SampleKey]]:
        return iter(self.batch_keys(self.epoch))

    def batch_keys(self, epoch: int) -> list[list[SampleKey]]:
        """This rank's batches for `epoch`."""
        rng = np.random.default_rng([self.seed, epoch])
        scene_stream: list[int] = []
        batches = []
        for step in range(self.batches_per_epoch):
            num_frames = int(rng.integers(self.num_frames_range[0], self.num_frames_range[1] + 1))
            aspect_ratio = float(rng.uniform(*self.aspect_range))
            per_rank = self.frames_per_gpu // num_frames
            global_size = per_rank * self.world_size
            if self.scene_probabilities is not None:  # weighted datasets: independent draws
                scenes = rng.choice(self.num_scenes, size=global_size, p=self.scene_probabilities).tolist()
            else:
                while len(scene_stream) < global_size:
                    scene_stream.extend(rng.permutation(self.num_scenes).tolist())
                scenes, scene_stream = scene_stream[:global_size], scene_stream[global_size:]
            positions = range(self.rank * per_rank, (self.rank + 1) * per_rank)
            batches.append(
                [
                    SampleKey(scenes[p], num_frames, aspect_ratio, sample_seed(self.seed, epoch, step, p))
                    for p in positions
                ]
            )
        return batches


@dataclass(frozen=True)
class DatasetSource:
    """One entry of `data.roots`: a dataset root or scene folder, with how samples are drawn from it.

    weight: this dataset's share of the samples (normalised over the entries; an entry without one counts 1.0),
        independent of how many scenes it holds. When no entry sets a weight, every scene is equally likely.
    format: how `path` is laid out: our scene folders, or a public dataset read in its published layout.
    expand_ratio: nearby frames, for video-like datasets (the reference's `get_nearby`): a sample of S frames is
        an anchor frame plus S - 1 frames drawn from the int(S * expand_ratio) frames either side of it. None:
        frames drawn from the whole scene.
    """

    path: str
    weight: float | None = None
    expand_ratio: float | None = None
    format: str = "folders"  # folders (docs/dataset_format.md) | vkitti2 | co3d (vggt.data.*, their own layouts)
    categories: tuple[str, ...] | None = None  # co3d: the categories to read (None: all)
    subset: str | None = None  # co3d: a set list (e.g. fewview_train): only its `split` frames
    split: str = "train"  # co3d: the split of `subset`

    @classmethod
    def parse(cls, entry: str | Path | Mapping[str, Any]) -> DatasetSource:
        if isinstance(entry, (str, Path)):
            return cls(str(entry))
        unknown = sorted(set(entry) - {field.name for field in dataclasses.fields(cls)})
        if "path" not in entry or unknown:
            raise ValueError(
                f"data.roots entry {dict(entry)} must be a path or {{path, weight, expand_ratio, format}}"
                " (co3d also: categories, subset, split)"
            )
        categories = entry.get("categories")
        categories = [categories] if isinstance(categories, str) else categories
        source = cls(
            str(entry["path"]),
            entry.get("weight"),
            entry.get("expand_ratio"),
            entry.get("format", "folders"),
            None if categories is None else tuple(str(c) for c in categories),
            entry.get("subset"),
            entry.get("split", "train"),
        )
        if source.format not in DATASET_FORMATS:
            raise ValueError(
                f"data.roots entry {source.path}: format must be one of {DATASET_FORMATS}, got {source.format!r}"
            )
        if source.weight is not None and not source.weight > 0:
            raise ValueError(f"data.roots entry {source.path}: weight must be positive, got {source.weight}")
        if source.expand_ratio is not None and not source.expand_ratio > 0:
            raise ValueError(
                f"data.roots entry {source.path}: expand_ratio must be positive, got {source.expand_ratio}"
            )
        return source
