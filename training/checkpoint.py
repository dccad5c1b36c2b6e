"""Training checkpoints: the model in `save_pretrained` layout plus everything needed to resume exactly.

One checkpoint is one directory `<run_dir>/checkpoints/step_<N>/` holding

- `config.json` + `model.safetensors`: plain VGGT weights (LoRA adapters folded in) that
  `VGGT.from_pretrained(dir)` loads;
- `trainable.safetensors` (LoRA runs only): the adapter weights, which cannot be recovered from merged weights;
- `training_state.pt`: optimizer, scheduler, step, data-sampler position and the run's config;
- `rng_state.pt`: python, numpy and torch RNG states of every rank.

The directory is written under a temporary name and renamed into place (`vggt.utils.files.atomic_directory`),
so a run killed while saving leaves either the previous checkpoint or the new one, never half of one.
Everything is read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from training import lora
from training.distributed import barrier
from vggt.errors import InputError
from vggt.models.checkpoint import WEIGHTS_NAME, save_model_dir
from vggt.utils.files import atomic_directory, atomic_file

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
STEP_DIR_PATTERN = re.compile(r"^step_(\d+)$")
TRAINING_STATE_NAME = "training_state.pt"
RNG_STATE_NAME = "rng_state.pt"
TRAINABLE_NAME = "trainable.safetensors"


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


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    model_state: dict[str, Tensor],
    optimizer_state: dict[str, Any] | None,
    strict: bool = True,
) -> None:
    """Load full (unsharded) model and optimizer states into a plain, DDP or FSDP model on every rank."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=strict)
    set_model_state_dict(model, model_state, options=options)
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)


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
) -> Path:
    """Write a complete checkpoint for `step` atomically; every rank must call this (collectives inside).

    Args:
        model: the model as trained (possibly DDP- or FSDP-wrapped).
        unwrapped_model: the VGGT module inside (for its config and LoRA layers).
        extra_state: small picklable-free values to restore (step counters, sampler position, config).
        keep_last: delete older checkpoints beyond this many (None keeps all).
    """
    final = checkpoint_dir(run_dir, step)
    model_state = full_model_state_dict(model)
    optimizer_state = full_optimizer_state_dict(model, optimizer)
    rng_states = _gather_rng_states()
    if is_main:
        with atomic_directory(final, overwrite=True) as staging:
            if lora.has_lora(unwrapped_model):
                from safetensors.torch import save_file

                plain = lora.merged_state_dict(unwrapped_model)
                trainable = {k: v for k, v in model_state.items() if lora.is_adapter_parameter(k)}
                with atomic_file(staging / TRAINABLE_NAME) as path:  # (with the usual file mode)
                    save_file({k: v.contiguous() for k, v in trainable.items()}, str(path))
            else:
                plain = model_state
            save_model_dir(staging, plain, unwrapped_model.config)
            training_state = {"step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict()}
            torch.save({**training_state, **extra_state}, staging / TRAINING_STATE_NAME)
            torch.save(rng_states, staging / RNG_STATE_NAME)
        if keep_last is not None and keep_last > 0:
            for _, old in list_checkpoints(run_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(
    directory: str | Path,
    model: nn.Module,
    unwrapped_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int = 0,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and this rank's RNG state; returns the training state dict."""
    from vggt.models.checkpoint import read_state_dict

    directory = Path(directory)
    state_path = directory / TRAINING_STATE_NAME
    if not state_path.is_file():
        raise FileNotFoundError(f"{directory} is not a complete training checkpoint: {TRAINING_STATE_NAME} is missing")
    training_state = torch.load(state_path, map_location="cpu", weights_only=True)
    with_lora = lora.has_lora(unwrapped_model)
    if with_lora:
        from safetensors.torch import load_file

        # The base weights are the run's initial weights (LoRA never changes them); only adapters move.
        model_state = load_file(str(directory / TRAINABLE_NAME))
        known = {name for name, _ in unwrapped_model.named_parameters()}
        unknown = sorted(set(model_state) - known)
        if unknown:
            raise ValueError(f"{directory / TRAINABLE_NAME}: adapters {unknown[:5]} do not exist in this model")
    else:
        model_state = read_state_dict(directory / WEIGHTS_NAME)
    load_full_state(model, optimizer, model_state, training_state["optimizer"], strict=not with_lora)
    scheduler.load_state_dict(training_state["scheduler"])
    rng_states = torch.load(directory / RNG_STATE_NAME, map_location="cpu", weights_only=True)
    if rank >= len(rng_states):
        raise ValueError(
            f"{directory} was written by {len(rng_states)} processes; resume with the same number of processes"
        )
    restore_rng_state(rng_states[rank])
    return training_state


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
