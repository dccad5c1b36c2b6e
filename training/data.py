"""Training data: multi-view samples from scene folders or from synthetic scenes rendered on the fly.

A sample is `num_frames` views (2..24 by default) of one scene, cropped and resized to one shared shape
(see vggt.data.augment). A batch holds samples with the same number of frames and the same shape, and as
many of them as fit a constant frame budget per GPU: batch size = frames_per_gpu // num_frames (48 frames
per GPU in the paper). The batch sampler draws (number of frames, aspect ratio, scenes) for every step
from (seed, epoch) alone, so all ranks agree on a step's global batch, each rank takes its own slice, and
a run is reproducible and resumable batch for batch. Every sample carries its own seed for frame choice
and augmentation, so results do not depend on the number of data workers.

Batch dict produced by `collate_samples` (B samples of S frames at H x W, H and W multiples of 14):

    images       [B, S, 3, H, W] float32 in [0, 1]
    intrinsics   [B, S, 3, 3]    float32, in pixels of the H x W images (pixel centres at integers)
    extrinsics   [B, S, 3, 4]    float32 camera-from-world, OpenCV axes (x right, y down, z forward)
    depths       [B, S, H, W]    float32 metres, 0 where unknown           } absent when no sample of the
    valid_masks  [B, S, H, W]    bool: depth > 0 and inside the scene mask } batch has depth
    has_depth    [B]             bool: which samples carry depth (the others have zero depth, no valid pixel)
    scene_names  list[str]       B scene names
    frame_ids    [B, S]          int64 indices of the frames in their scene

World points are not in the batch: unproject `depths` with vggt.utils.geometry when needed.

Config (the `data:` section of a training YAML; `build_train_loader`):

    source: synthetic | folders   # scenes rendered on the fly, or scene folders on disk
    roots: [PATH, ...]            # folders: dataset roots (folders of scenes) or single scene folders; an entry
                                  # may also be {path: PATH, weight: 0.3, expand_ratio: 2.0} (DatasetSource), with
                                  # format: vkitti2 | co3d for those datasets' own layouts
    num_scenes: 64                # synthetic: number of distinct scene layouts
    frames_per_gpu: 48
    num_frames: [2, 24]           # inclusive range of frames per sample
    batches_per_epoch: null       # default: about one visit of each scene per epoch
    use_depth: true               # false: camera-only training even where depth exists
    augment: true                 # false: centre crops, no colour changes
    num_workers: 0
    num_threads: null             # threads reading and augmenting frames, per process (default: its share of cores)
    image: {max_size: 518, patch_size: 14, aspect_range: [0.33, 1.0], ...}   # vggt.data.augment.AugmentConfig
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from training.sampling import (
    PAPER_FRAMES_PER_GPU,
    PAPER_NUM_FRAMES_RANGE,
    DatasetSource,
    FrameBudgetBatchSampler,
    SampleKey,
    nearby_frame_ids,
)
from vggt.data.augment import (
    AugmentConfig,
    ColorChange,
    apply_color_change,
    apply_frame_plan,
    color_generators,
    draw_color_change,
    frame_plans,
    target_shape,
)
from vggt.data.scene import CAMERAS_FILE, Frame, Scene, list_scenes, load_scene
from vggt.data.synthetic import generate_scene, layout_rng, sample_layout

MAX_DEFAULT_THREADS = 4  # beyond this, Python's own per-frame work (under the GIL) gains little


def default_loader_threads(num_workers: int = 0) -> int:
    """Threads that read and augment the frames of a sample, per loading process: this process's cores shared
    among its data workers and the training processes on this machine (`LOCAL_WORLD_SIZE`), at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = max(1, num_workers) * max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_DEFAULT_THREADS, cores // processes))


class MultiViewDataset(Dataset):
    """Base class: turns a SampleKey into a sample dict (see the module docstring, without the batch dim), and the
    SampleKeys of a batch into the batch dict (`load_batch`, written straight into the batch's arrays).

    Subclasses implement `__len__` (number of scenes) and `start_frames`. The frames are read, augmented and
    converted by `num_threads` threads (None: `default_loader_threads()`); every random draw is made in the calling
    thread in a fixed order and results are kept by frame index, so samples do not depend on the thread count.
    """

    def __init__(
        self,
        image_config: AugmentConfig | None = None,
        augment: bool = True,
        use_depth: bool = True,
        num_threads: int | None = None,
    ):
        self.image_config = image_config or AugmentConfig()
        self.augment = augment
        self.use_depth = use_depth
        self.num_threads = default_loader_threads() if num_threads is None else int(num_threads)
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None, "_pool_pid": None}  # data workers start their own threads

    def __len__(self) -> int:
        raise NotImplementedError

    def run(self, function: Callable[..., Any], *args: Any) -> Future:
        """`function(*args)` on the loading threads, first come first served (at once here when there is one)."""
        if self.num_threads == 1:
            future: Future = Future()
            try:
                future.set_result(function(*args))
            except Exception as error:
                future.set_exception(error)
            return future
        if self._pool is None or self._pool_pid != os.getpid():  # a forked data worker needs threads of its own
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="vggt-data")
            self._pool_pid = os.getpid()
        return self._pool.submit(function, *args)

    def start_frames(
        self, scene_index: int, num_frames: int, out_hw: tuple[int, int], rng: np.random.Generator
    ) -> tuple[str, np.ndarray, list[Future]]:
        """(scene name, frame ids [S], futures of the frames at `out_hw`, augmented), the work given to `run`."""
        raise NotImplementedError

    def load_frames(
        self, scene_index: int, num_frames: int, out_hw: tuple[int, int], rng: np.random.Generator
    ) -> tuple[str, np.ndarray, list[Frame]]:
        """(scene name, frame ids [S], frames already at `out_hw` and augmented)."""
        name, frame_ids, futures = self.start_frames(scene_index, num_frames, out_hw, rng)
        return name, frame_ids, [future.result() for future in futures]

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        batch = self.load_batch([key])
        sample = {name: batch[name][0] for name in ("images", "intrinsics", "extrinsics", "frame_ids")}
        sample["scene_name"] = batch["scene_names"][0]
        if "depths" in batch and batch["has_depth"][0]:
            sample["depths"], sample["valid_masks"] = batch["depths"][0], batch["valid_masks"][0]
        return sample

    def load_batch(self, keys: Sequence[SampleKey]) -> dict[str, Any]:
        """The batch dict of `collate_samples` for samples of one number of frames and one shape: each frame is
        written into the batch's arrays on the loading threads, with no per-sample copies."""
        keys = [SampleKey(*key) for key in keys]
        shapes = {(key.num_frames, self.output_shape(key)) for key in keys}
        if len(shapes) > 1:
            raise ValueError(f"samples of one batch must share frames and size, got {sorted(shapes)}")
        ((num_frames, (height, width)),) = shapes
        batch_shape = (len(keys), num_frames)
        arrays = {
            "images": np.empty((*batch_shape, 3, height, width), dtype=np.float32),
            "intrinsics": np.empty((*batch_shape, 3, 3), dtype=np.float32),
            "extrinsics": np.empty((*batch_shape, 3, 4), dtype=np.float32),
        }
        if self.use_depth:  # zeros where a frame has no valid depth, or no depth at all
            arrays["depths"] = np.zeros((*batch_shape, height, width), dtype=np.float32)
            arrays["valid_masks"] = np.zeros((*batch_shape, height, width), dtype=bool)
        names, frame_ids, filled = [], [], []
        for index, key in enumerate(keys):
            rng = np.random.default_rng(key.seed)
            name, ids, futures = self.start_frames(key.scene_index, key.num_frames, (height, width), rng)
            names.append(name)
            frame_ids.append(np.asarray(ids, dtype=np.int64))
            # The pool is first in, first out: a frame's own task has started before the task that waits for it.
            filled.append([self.run(_fill_frame, arrays, (index, i), future) for i, future in enumerate(futures)])
        has_depth = [all([future.result() for future in sample]) for sample in filled]  # waits for every frame
        batch: dict[str, Any] = {
            name: torch.from_numpy(arrays[name]) for name in ("images", "intrinsics", "extrinsics")
        }
        batch["frame_ids"] = torch.from_numpy(np.stack(frame_ids))
        batch["scene_names"] = names
        if any(has_depth):
            for index in np.flatnonzero(~np.asarray(has_depth)):  # some frames without depth: the sample has none
                arrays["depths"][index] = 0.0
                arrays["valid_masks"][index] = False
            batch["depths"] = torch.from_numpy(arrays["depths"])
            batch["valid_masks"] = torch.from_numpy(arrays["valid_masks"])
            batch["has_depth"] = torch.tensor(has_depth)
        return batch

    def output_shape(self, key: SampleKey) -> tuple[int, int]:
        return target_shape(key.aspect_ratio, self.image_config.max_size, self.image_config.patch_size)


def _fill_frame(arrays: dict[str, np.ndarray], index: tuple[int, int], future: Future) -> bool:
    """Write the frame of `future` at `index` (sample, frame) of the batch arrays; whether it had depth.

    Images become float32 value / 255 (a float division); depth is kept where it is positive and inside the mask.
    """
    frame = future.result()
    np.divide(frame.image.transpose(2, 0, 1), np.float32(255), out=arrays["images"][index])
    arrays["intrinsics"][index] = frame.intrinsic
    arrays["extrinsics"][index] = frame.extrinsic
    if "depths" not in arrays or frame.depth is None:
        return False
    valid = np.greater(frame.depth, 0, out=arrays["valid_masks"][index])
    if frame.mask is not None:
        np.logical_and(valid, frame.mask, out=valid)
    np.copyto(arrays["depths"][index], frame.depth, where=valid)
    return True


def _read_scenes(source: DatasetSource, use_depth: bool) -> list[Scene]:
    """The scenes of one `data.roots` entry (headers only: pixels are read per sample)."""
    root = Path(source.path)
    if source.format == "vkitti2":
        from vggt.data.vkitti2 import list_sequences

        return list_sequences(root)
    if source.format == "co3d":
        from vggt.data.co3d import list_sequences as list_co3d_sequences

        categories = None if source.categories is None else list(source.categories)
        return list_co3d_sequences(root, categories, source.subset, source.split)
    folders = [root] if (root / CAMERAS_FILE).is_file() else list_scenes(root)
    return [load_scene(folder, load_data=False, use_depth=use_depth) for folder in folders]


class SceneFolderDataset(MultiViewDataset):
    """Scenes in the folder format of docs/dataset_format.md, validated when the dataset is built.

    Args:
        roots: dataset roots (folders of scene folders) and/or scene folders.
        image_config: output size and augmentation strengths.
        augment: random crops and colour changes (False: centre crops, original colours).
        use_depth: False ignores depth/ folders (camera-only training).
        num_threads: threads reading and augmenting the frames of a sample (None: `default_loader_threads()`).
    """

    def __init__(
        self,
        roots: Sequence[str | Path] | str | Path,
        image_config: AugmentConfig | None = None,
        augment: bool = True,
        use_depth: bool = True,
        num_threads: int | None = None,
    ):
        super().__init__(image_config, augment, use_depth, num_threads)
        roots = [roots] if isinstance(roots, (str, Path, Mapping)) else list(roots)
        if not roots:
            raise ValueError("SceneFolderDataset needs at least one dataset root or scene folder")
        self.sources = [DatasetSource.parse(root) for root in roots]
        self.scenes: list[Scene] = []
        self.scene_source: list[int] = []  # index into self.sources of every scene
        for index, source in enumerate(self.sources):
            found = _read_scenes(source, use_depth)
            self.scenes.extend(found)
            self.scene_source.extend([index] * len(found))

    def scene_probabilities(self) -> np.ndarray | None:
        """[num_scenes] probability of drawing each scene under the sources' weights; None when none is set."""
        if all(source.weight is None for source in self.sources):
            return None
        weights = np.array([1.0 if s.weight is None else float(s.weight) for s in self.sources])
        counts = np.bincount(self.scene_source, minlength=len(self.sources))
        if (counts == 0).any():
            empty = [self.sources[i].path for i in np.flatnonzero(counts == 0)]
            raise ValueError(f"data.roots {empty} hold no scene but have a sampling weight")
        per_scene = weights[self.scene_source] / counts[self.scene_source]
        return per_scene / per_scene.sum()

    def __len__(self) -> int:
        return len(self.scenes)

    def start_frames(self, scene_index, num_frames, out_hw, rng):
        scene = self.scenes[scene_index]
        expand_ratio = self.sources[self.scene_source[scene_index]].expand_ratio
        if expand_ratio is None:
            frame_ids = rng.choice(scene.num_frames, size=num_frames, replace=scene.num_frames < num_frames)
        else:
            frame_ids = nearby_frame_ids(scene.num_frames, num_frames, expand_ratio, rng)
        reads = [self.run(scene.read_frame, int(i), self.use_depth) for i in frame_ids]
        # Each frame's plan is drawn (in frame order) as soon as it is read, while later frames are still read.
        sizes = (read.result().image.shape[:2] for read in reads)
        plans = frame_plans(sizes, len(reads), out_hw, rng if self.augment else None, self.image_config)
        augmented = [self.run(apply_frame_plan, read.result(), plan, out_hw) for read, plan in zip(reads, plans)]
        return scene.name, frame_ids, augmented


class SyntheticSceneDataset(MultiViewDataset):
    """`num_scenes` synthetic layouts (vggt.data.synthetic); every sample renders new cameras at its size.

    Scene i always has the same layout (seeded by `seed` and i); cameras and colours follow the sample seed.
    """

    def __init__(
        self,
        num_scenes: int,
        image_config: AugmentConfig | None = None,
        augment: bool = True,
        use_depth: bool = True,
        seed: int = 0,
        num_threads: int | None = None,
    ):
        super().__init__(image_config, augment, use_depth, num_threads)
        if num_scenes < 1:
            raise ValueError(f"num_scenes must be at least 1, got {num_scenes}")
        self.num_scenes = num_scenes
        self.seed = seed

    def __len__(self) -> int:
        return self.num_scenes

    def start_frames(self, scene_index, num_frames, out_hw, rng):
        layout = sample_layout(layout_rng(self.seed, scene_index))
        scene = generate_scene(num_frames, *out_hw, seed=int(rng.integers(2**31)), layout=layout)
        frames = [scene.read_frame(i, with_depth=self.use_depth) for i in range(num_frames)]
        if self.augment:
            color_rngs = color_generators(rng, num_frames, self.image_config)
            changes = [draw_color_change(r, self.image_config, f.image.shape[:2]) for f, r in zip(frames, color_rngs)]
        else:
            changes = [ColorChange()] * num_frames
        futures = [self.run(_with_colors, frame, change) for frame, change in zip(frames, changes)]
        return f"synthetic_{scene_index:04d}", np.arange(num_frames), futures


def _with_colors(frame: Frame, change: ColorChange) -> Frame:
    frame.image = apply_color_change(frame.image, change)
    return frame


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack sample dicts into the batch dict of the module docstring."""
    shapes = {tuple(s["images"].shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"samples of one batch must share frames and size, got shapes {sorted(shapes)}")
    batch: dict[str, Any] = {
        key: torch.stack([s[key] for s in samples]) for key in ("images", "intrinsics", "extrinsics", "frame_ids")
    }
    batch["scene_names"] = [s["scene_name"] for s in samples]
    has_depth = [("depths" in s) for s in samples]
    if any(has_depth):
        _, frames, _, height, width = batch["images"].shape
        empty_depth = None if all(has_depth) else torch.zeros(frames, height, width)
        empty_mask = None if all(has_depth) else torch.zeros(frames, height, width, dtype=torch.bool)
        batch["depths"] = torch.stack([s.get("depths", empty_depth) for s in samples])
        batch["valid_masks"] = torch.stack([s.get("valid_masks", empty_mask) for s in samples])
        batch["has_depth"] = torch.tensor(has_depth)
    return batch


@dataclass
class DataConfig:
    """The `data:` section of a training config (see the module docstring)."""

    source: str = "synthetic"
    roots: list[str] = field(default_factory=list)
    num_scenes: int = 64
    frames_per_gpu: int = PAPER_FRAMES_PER_GPU
    num_frames: tuple[int, int] = PAPER_NUM_FRAMES_RANGE
    batches_per_epoch: int | None = None
    use_depth: bool = True
    augment: bool = True
    num_workers: int = 0
    num_threads: int | None = None
    image: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def resolution(self) -> int:
        """The longest image side of the training samples: the resolution the model learns to run at."""
        return max(target_shape(1.0, self.image.max_size, self.image.patch_size))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"data: unknown keys {unknown}; known keys: {sorted(known)}")
        image = values.pop("image", None) or {}
        try:
            image_config = image if isinstance(image, AugmentConfig) else AugmentConfig(**image)
        except TypeError as error:
            raise ValueError(f"data.image: {error}") from None
        config = cls(**values, image=image_config)
        config.num_frames = tuple(config.num_frames)
        config.roots = [config.roots] if isinstance(config.roots, (str, Mapping)) else list(config.roots)
        for root in config.roots:
            DatasetSource.parse(root)  # errors now, before any scene is read
        if config.source not in ("synthetic", "folders"):
            raise ValueError(f"data.source must be 'synthetic' or 'folders', got {config.source!r}")
        if config.source == "folders" and not config.roots:
            raise ValueError("data.source is 'folders' but data.roots is empty: list dataset roots or scene folders")
        return config


def build_dataset(config: DataConfig, seed: int = 0) -> MultiViewDataset:
    threads = default_loader_threads(config.num_workers) if config.num_threads is None else config.num_threads
    if config.source == "synthetic":
        return SyntheticSceneDataset(
            config.num_scenes, config.image, config.augment, config.use_depth, seed, num_threads=threads
        )
    return SceneFolderDataset(config.roots, config.image, config.augment, config.use_depth, num_threads=threads)


class TrainLoader:
    """Batches for any (epoch, position): `iterate(epoch, skip)` resumes mid-epoch without loading skipped data."""

    def __init__(self, dataset: MultiViewDataset, sampler: FrameBudgetBatchSampler, num_workers: int = 0):
        self.dataset = dataset
        self.sampler = sampler
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.sampler)

    def iterate(self, epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        keys = self.sampler.batch_keys(epoch)[skip:]
        if not keys:
            return iter(())
        loader = DataLoader(
            _Batches(self.dataset),
            sampler=keys,
            batch_size=None,  # each index is a whole batch's keys, loaded at once
            collate_fn=_as_loaded,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        return iter(loader)


class _Batches(Dataset):
    """A dataset's batches: indexed by a list of SampleKeys (`MultiViewDataset.load_batch`)."""

    def __init__(self, dataset: MultiViewDataset):
        self.dataset = dataset

    def __getitem__(self, keys: Sequence[SampleKey]) -> dict[str, Any]:
        return self.dataset.load_batch(keys)


def _as_loaded(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def build_train_loader(config: Mapping[str, Any] | DataConfig, rank: int = 0, world_size: int = 1, seed: int = 0):
    """The training loader for a `data:` config section, sharded for `rank` of `world_size`."""
    config = config if isinstance(config, DataConfig) else DataConfig.from_dict(config)
    dataset = build_dataset(config, seed)
    sampler = FrameBudgetBatchSampler(
        len(dataset),
        frames_per_gpu=config.frames_per_gpu,
        num_frames_range=config.num_frames,
        aspect_range=config.image.aspect_range,
        batches_per_epoch=config.batches_per_epoch,
        rank=rank,
        world_size=world_size,
        seed=seed,
        scene_probabilities=dataset.scene_probabilities() if isinstance(dataset, SceneFolderDataset) else None,
    )
    return TrainLoader(dataset, sampler, config.num_workers)
