"""Training checkpoints on `torch.distributed.checkpoint` (DCP): every process writes and reads only its shard.

One checkpoint is one directory `<run_dir>/checkpoints/step_<N>/` holding

- `shards/`: model and optimizer state in DCP's layout (`.metadata` plus one `__<rank>_0.distcp` file per
  writing process). Under FSDP each rank writes its own shards; under DDP the replicated tensors are written
  once, spread over the ranks. DCP re-shards on load, so a run resumes on any number of processes;
- `model_config.json`: the model's VGGTConfig, so `export_checkpoint` can rebuild it without the run's config;
- `training_state.pt`: scheduler, step, data-sampler position, process count, frames per step and the run's
  config (small; rank 0 writes it);
- `rng_state.pt`: python, numpy and torch RNG states of every rank;
- with `checkpoint.plain_weights` (the default): `config.json` + `model.safetensors`, plain VGGT weights
  (LoRA adapters folded in) that `VGGT.from_pretrained(dir)` loads. Rank 0 gathers the model for them; large
  runs turn this off and use `export_checkpoint` (`vggt train --export`) when they need plain weights.

Rank 0 stages the directory under a temporary name (`vggt.utils.files.staging_path`), every rank writes its
shards into it (with `checkpoint.async_save`, from a background thread while training goes on), and rank 0
renames it into place once all are written, so a run killed while saving leaves either the previous
checkpoint or the new one, never half of one. Every rank must see the same file system (one disk, or a shared
one across nodes). Nothing is unpickled: `torch.load(weights_only=True)` and DCP's tensor files only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from training import lora
from training.distributed import barrier, broadcast_object
from training.optim import fill_missing_adamw_state
from vggt.errors import InputError
from vggt.models.checkpoint import config_to_json, save_model_dir
from vggt.utils.files import remove_stale_staging, replace_with, staging_path

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
STEP_DIR_PATTERN = re.compile(r"^step_(\d+)$")
TRAINING_STATE_NAME = "training_state.pt"
RNG_STATE_NAME = "rng_state.pt"
SHARDS_DIRNAME = "shards"
MODEL_CONFIG_NAME = "model_config.json"


# ------------------------------------------------------------------------------------------ RNG


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch RNG states, as tensors and plain values (weights_only-safe)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng_states() -> list[dict[str, Any]]:
    """RNG states of all ranks, in rank order (gathered everywhere; only rank 0 writes them)."""
    mine = capture_rng_state()
    if not dist.is_initialized():
        return [mine]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


# ---------------------------------------------------------------------------------- state dicts


def full_model_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Unsharded, unwrapped parameter names -> CPU tensors (complete on rank 0 under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


# ---------------------------------------------------------------------------------- save / load


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIRNAME / f"step_{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, directory), oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIRNAME
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = STEP_DIR_PATTERN.match(entry.name)
        if match and (entry / TRAINING_STATE_NAME).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """Silence DCP's note that a run without a process group saves and loads in one process (it is meant)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """{"model": ..., "optim": ...} as this rank holds them (DTensor shards under FSDP), for DCP to save or fill.

    Every trainable parameter gets optimizer state first (training.optim.fill_missing_adamw_state): DCP and
    `set_state_dict` expect one entry per parameter, also for those that never received a gradient.
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict

    fill_missing_adamw_state(optimizer)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optimizer_state}


def _staging_directory(final: Path, is_main: bool) -> Path:
    """Rank 0 makes a fresh hidden staging folder beside `final` (clearing any a dead run left); every rank learns
    its path."""
    staging = None
    if is_main:
        remove_stale_staging(final)
        staging = staging_path(final)
        staging.mkdir(parents=True)
    return Path(broadcast_object(str(staging) if is_main else None))


@dataclass
class PendingCheckpoint:
    """A checkpoint being written: `finish()` waits for this rank's shards (written in the background with
    `checkpoint.async_save`), then rank 0 renames the staging folder into place. Every rank must call it."""

    final: Path
    staging: Path
    run_dir: Path
    keep_last: int | None
    is_main: bool
    writing: Future | None = None

    def finish(self) -> Path:
        if self.writing is not None:
            self.writing.result()
            self.writing = None
        barrier()  # every shard is on disk before rank 0 renames the folder into place
        if self.is_main and self.staging.exists():
            replace_with(self.staging, self.final)
            if self.keep_last is not None and self.keep_last > 0:
                for _, old in list_checkpoints(self.run_dir)[: -self.keep_last]:
                    shutil.rmtree(old, ignore_errors=True)
        barrier()
        return self.final


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    unwrapped_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    extra_state: dict[str, Any],
    keep_last: int | None = None,
    is_main: bool = True,
    plain_weights: bool = True,
    async_save: bool = False,
) -> PendingCheckpoint:
    """Write a complete checkpoint for `step` atomically; every rank must call this (collectives inside).

    Args:
        model: the model as trained (possibly DDP- or FSDP-wrapped).
        unwrapped_model: the VGGT module inside (for its config and LoRA layers).
        extra_state: small values to restore (step counters, sampler position, config), no tensors needed.
        keep_last: delete older checkpoints beyond this many (None keeps all).
        plain_weights: also write `config.json` + `model.safetensors` (rank 0 gathers the whole model).
        async_save: copy the shards to host memory and write them in a background thread (DCP's async_save);
            the returned checkpoint is complete once `finish()` returns. Otherwise it is finished on return.
    """
    import torch.distributed.checkpoint as dcp

    final = checkpoint_dir(run_dir, step)
    state = _sharded_state(model, optimizer)
    rng_states = _gather_rng_states()
    plain = full_model_state_dict(model) if plain_weights else None
    staging = _staging_directory(final, is_main)
    pending = PendingCheckpoint(final, staging, Path(run_dir), keep_last, is_main)
    try:
        write = dcp.async_save if async_save else dcp.save
        with _single_process_quiet():
            written = write(state, checkpoint_id=staging / SHARDS_DIRNAME, no_dist=not dist.is_initialized())
        if async_save:  # a Future, or a response whose upload_completion is one
            pending.writing = getattr(written, "upload_completion", written)
        if is_main:
            config = unwrapped_model.config
            if plain is not None:
                save_model_dir(staging, lora.plain_state_dict(unwrapped_model, plain), config)
            (staging / MODEL_CONFIG_NAME).write_text(json.dumps(config_to_json(config), indent=2, sort_keys=True))
            torch.save(rng_states, staging / RNG_STATE_NAME)
            training_state = {"step": step, "scheduler": scheduler.state_dict(), **extra_state}
            torch.save(training_state, staging / TRAINING_STATE_NAME)
    except BaseException:
        if is_main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if not async_save:
        pending.finish()
    return pending


def load_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int = 0,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and this rank's RNG state; returns the training state dict.

    Each rank reads only the shards it holds; a checkpoint written by another number of processes is re-sharded
    (ranks beyond the writer's count keep their own seeded RNG state).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    directory = Path(directory)
    state_path = directory / TRAINING_STATE_NAME
    if not state_path.is_file():
        raise FileNotFoundError(f"{directory} is not a complete training checkpoint: {TRAINING_STATE_NAME} is missing")
    if not (directory / SHARDS_DIRNAME).is_dir():
        raise FileNotFoundError(
            f"{directory} has no {SHARDS_DIRNAME}/: a checkpoint of a vggt before sharded checkpoints; resume it with "
            "that version, or start a new run from its weights with model.pretrained"
        )
    training_state = torch.load(state_path, map_location="cpu", weights_only=True)
    rng_states = torch.load(directory / RNG_STATE_NAME, map_location="cpu", weights_only=True)
    state = _sharded_state(model, optimizer)
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=directory / SHARDS_DIRNAME, no_dist=not dist.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(training_state["scheduler"])
    if rank < len(rng_states):
        restore_rng_state(rng_states[rank])
    return training_state


def export_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Consolidate a checkpoint (or the newest one of a run folder) into a plain model folder, in one process.

    Returns `out`, holding `config.json` + `model.safetensors` for `VGGT.from_pretrained` (LoRA folded in).
    """
    import torch.distributed.checkpoint as dcp

    from vggt.models.checkpoint import config_from_json
    from vggt.models.vggt import VGGT

    source = Path(source)
    directory = latest_checkpoint(source) if (source / CHECKPOINTS_DIRNAME).is_dir() else source
    if directory is None or not (directory / SHARDS_DIRNAME).is_dir():
        raise InputError(
            "{path} is neither a training checkpoint (with {shards}/) nor a run folder with checkpoints; "
            "pass <run_dir> or <run_dir>/checkpoints/step_<N>",
            path=source,
            shards=SHARDS_DIRNAME,
        )
    config_path = directory / MODEL_CONFIG_NAME
    model = VGGT(config_from_json(json.loads(config_path.read_text()), str(config_path)))
    lora_cfg = torch.load(directory / TRAINING_STATE_NAME, map_location="cpu", weights_only=True)["config"]["lora"]
    if lora_cfg["enabled"]:
        lora.apply_lora(model, int(lora_cfg["rank"]), float(lora_cfg["alpha"]), 0.0, lora_cfg["target_modules"])
    state = {"model": model.state_dict()}
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=directory / SHARDS_DIRNAME, no_dist=True)
    model.load_state_dict(state["model"])
    return save_model_dir(out, lora.plain_state_dict(model, model.state_dict()), model.config)


def load_first_readable(candidates: list[Path], load: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """`load` the first checkpoint directory of `candidates` that reads back (newest first: a damaged newest
    checkpoint, e.g. from a full disk, is reported and the next one taken); returns it and what `load` gave."""
    for index, directory in enumerate(candidates):
        try:
            return directory, load(directory)
        except Exception as err:  # truncated or damaged files raise assorted errors
            if index + 1 < len(candidates):
                logger.warning("checkpoint %s is damaged (%s); resuming from %s", directory, err, candidates[index + 1])
                continue
            raise InputError(
                "cannot resume: checkpoint {path} is damaged ({error}){others}",
                path=directory,
                error=err,
                others="" if len(candidates) == 1 else ", and so are the older ones",
            ) from None
    raise InputError("cannot resume: no checkpoint to resume from")


def accumulation_keeping_batch(
    saved_frames_per_step: int | None, frames_per_gpu: int, world_size: int, accum_steps: int, directory: Path
) -> int:
    """The `accum_steps` that keeps a resumed run's global batch (frames per optimizer step) at the checkpoint's
    when the number of processes changed; raises InputError saying what would work when none does."""
    if saved_frames_per_step is None or frames_per_gpu * world_size * accum_steps == saved_frames_per_step:
        return accum_steps
    per_micro_step = frames_per_gpu * world_size
    if saved_frames_per_step % per_micro_step == 0:
        return saved_frames_per_step // per_micro_step
    raise InputError(
        "checkpoint {path} trained with {saved} frames per step, which {world} processes of data.frames_per_gpu="
        "{frames} cannot reach with any optim.accum_steps; use processes x frames_per_gpu that divides {saved}",
        path=directory,
        saved=saved_frames_per_step,
        world=world_size,
        frames=frames_per_gpu,
    )
