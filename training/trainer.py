"""The training loop: model set-up (presets, pretrained weights, frozen modules, LoRA), AdamW with linear
warmup and cosine decay, bf16 autocast, gradient accumulation and clipping, logging and exact resumption.

    trainer = Trainer(config)          # config: the dict `training.train.load_config` returns
    summary = trainer.train()

Every logged step appends one JSON object to `<run_dir>/metrics.jsonl` (step, loss, every loss term, lr,
grad_norm, and `val/...` held-out metrics at validation steps: training.validation), writes the same scalars
to TensorBoard under `<run_dir>/tensorboard` and redraws `<run_dir>/curves.png` (training.plot).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training import checkpoint as ckpt
from training import lora
from training.distributed import (
    DistributedContext,
    all_gather_metrics,
    all_gather_objects,
    barrier,
    rank_seed,
    seed_everything,
    setup_distributed,
    unwrap_model,
    wrap_model,
)
from training.interrupt import StopRequest
from training.losses import LossConfig, build_loss
from training.plot import CurvesWriter
from training.validation import ValidationConfig, find_scene_dirs, validate
from vggt.errors import InputError
from vggt.models.build import build_model as load_model
from vggt.models.checkpoint import save_model_dir
from vggt.models.config import HEAD_NAMES
from vggt.utils.device import autocast, resolve_dtype
from vggt.utils.files import check_writable_folder

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
FINAL_MODEL_DIR = "final"
REPLICAS_FILE = "replicas.json"
REGEX_PREFIX = "re:"
# Offsets that keep the seeds of different random streams apart.
TRACK_SEED_OFFSET = 7_919


# ------------------------------------------------------------------------------------ schedule


def warmup_cosine_schedule(warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier per step: linear warmup from 1/warmup to 1 over `warmup_steps`, then cosine down to `min_ratio`.

    A plain function (not a callable object), so LambdaLR checkpoints keep no copy of these constants and
    a resumed run follows its current config (e.g. a longer `max_steps`).
    """
    if total_steps <= 0:
        raise ValueError(f"optim.max_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"optim.warmup_steps must be in [0, max_steps={total_steps}], got {warmup_steps}")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


# ---------------------------------------------------------------------------------- model set-up


def matches_any(name: str, patterns: list[str]) -> bool:
    """fnmatch patterns on parameter names; a pattern starting with "re:" is a regular expression (re.search)."""
    for pattern in patterns:
        if pattern.startswith(REGEX_PREFIX):
            if re.search(pattern[len(REGEX_PREFIX) :], name):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def freeze_parameters(model: nn.Module, patterns: list[str]) -> list[str]:
    """Stop gradients for every parameter whose name matches; returns the frozen names."""
    if not patterns:
        return []
    frozen = [name for name, param in model.named_parameters() if matches_any(name, patterns)]
    if not frozen:
        raise ValueError(
            f"optim.freeze patterns {patterns} match no parameter; "
            "names look like 'aggregator.frame_blocks.0.attn.qkv.weight'"
        )
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def build_model(model_cfg: Mapping[str, Any]) -> nn.Module:
    """A VGGT from a preset (random weights) or pretrained weights, with the configured heads only."""
    heads = list(model_cfg.get("heads") or HEAD_NAMES)
    unknown = sorted(set(heads) - set(HEAD_NAMES))
    if unknown:
        raise ValueError(f"model.heads has unknown heads {unknown}; choose from {list(HEAD_NAMES)}")
    pretrained, preset = model_cfg.get("pretrained"), model_cfg.get("preset")
    if not pretrained and not preset:
        raise ValueError("set model.preset (e.g. tiny) or model.pretrained (a path or facebook/VGGT-1B)")
    if pretrained:
        model = load_model(pretrained, preset)
        _drop_heads(model, [name for name in HEAD_NAMES if name not in heads])
    else:
        enable = {f"enable_{name}": name in heads for name in HEAD_NAMES}
        overrides = dict(model_cfg.get("overrides") or {})
        model = load_model(None, preset, warn_random_weights=False, **enable, **overrides)
    model.set_gradient_checkpointing(bool(model_cfg.get("gradient_checkpointing", True)))
    return model


def _drop_heads(model: nn.Module, names: list[str]) -> None:
    """Remove heads of a loaded model that this run does not train (their weights are not saved either)."""
    if not names:
        return
    for name in names:
        setattr(model, f"{name}_head", None)
    model.config = dataclasses.replace(model.config, **{f"enable_{name}": False for name in names})


# ---------------------------------------------------------------------------------------- trainer


class Trainer:
    """Owns the model, optimizer, scheduler, data and logs of one run (one process of it under torchrun)."""

    def __init__(self, config: Mapping[str, Any], resume: str | Path | bool | None = None) -> None:
        """`resume`: True continues the latest checkpoint of `run_dir` (if any), a path that checkpoint."""
        self.config = config
        if config.get("threads"):
            torch.set_num_threads(int(config["threads"]))
        dist_cfg = config["distributed"]
        self.ctx: DistributedContext = setup_distributed(config["device"], dist_cfg["backend"])
        self.run_dir = Path(config["run_dir"])
        if self.ctx.is_main:  # before the model is built: a run that cannot save should not start
            check_writable_folder(self.run_dir, self.run_dir)
        self.seed = int(config["seed"])
        optim_cfg = config["optim"]
        self.max_steps = int(optim_cfg["max_steps"])
        self.accum_steps = int(optim_cfg["accum_steps"])
        if self.accum_steps < 1:
            raise ValueError(f"optim.accum_steps must be >= 1, got {self.accum_steps}")

        self._build_model()
        self._build_optimizer()
        self.grad_clip = float(optim_cfg["grad_clip"])
        self.loss_fn = build_loss(LossConfig.from_dict(config["loss"]))
        self.autocast_dtype = resolve_dtype(self.ctx.device, config["precision"], training=True)

        from training.data import build_train_loader

        self.loader = build_train_loader(
            config["data"], rank=self.ctx.rank, world_size=self.ctx.world_size, seed=self.seed
        )
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0  # batches of the current epoch already consumed

        self.validation, self.validation_scenes = _validation_setup(config)
        log_cfg = config["logging"]
        self.log_every = int(log_cfg["log_every"])
        self.checkpoint_every = int(config["checkpoint"]["every"])
        self.keep_last = config["checkpoint"]["keep_last"]
        if resume:
            self._resume(resume)
        elif ckpt.list_checkpoints(self.run_dir):
            raise InputError(
                "run_dir {path} already holds checkpoints; pass {resume=True} to continue it, or choose another "
                "run_dir",
                path=self.run_dir,
            )
        self._writer = None
        self._curves = CurvesWriter(self.run_dir) if self.ctx.is_main and log_cfg["curves"] else None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(_dump_yaml(config))
            if log_cfg["tensorboard"]:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=self.step + 1)
        self.show_progress = bool(log_cfg["progress"]) and self.ctx.is_main

    def _build_model(self) -> None:
        """The model (seeded alike on every rank: identical initial weights), LoRA, freezing, DDP/FSDP wrapping."""
        config, dist_cfg = self.config, self.config["distributed"]
        seed_everything(self.seed)
        model = build_model(config["model"])
        from training.data import DataConfig

        # Checkpoints and <run_dir>/final record the resolution the model trains at, where inference runs it.
        resolution = DataConfig.from_dict(config["data"]).resolution
        model.config = dataclasses.replace(model.config, train_resolution=resolution)
        lora_cfg = config["lora"]
        if lora_cfg["enabled"]:
            if dist_cfg["strategy"] == "fsdp":
                raise ValueError("lora.enabled with distributed.strategy=fsdp is not supported; use ddp for LoRA")
            lora.apply_lora(
                model,
                rank=int(lora_cfg["rank"]),
                alpha=float(lora_cfg["alpha"]),
                dropout=float(lora_cfg["dropout"]),
                target_modules=lora_cfg["target_modules"],
            )
        self.frozen = freeze_parameters(model, list(config["optim"]["freeze"] or []))
        model.to(self.ctx.device)
        model.train()
        self.model = wrap_model(
            model, self.ctx, dist_cfg["strategy"], find_unused_parameters=bool(dist_cfg["find_unused_parameters"])
        )
        self.module = unwrap_model(self.model)

    def _build_optimizer(self) -> None:
        """AdamW over the trainable parameters, with linear warmup then cosine decay."""
        optim_cfg = self.config["optim"]
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("every parameter is frozen: loosen optim.freeze or enable lora")
        self.optimizer = torch.optim.AdamW(
            trainable,
            lr=float(optim_cfg["lr"]),
            betas=tuple(float(b) for b in optim_cfg["betas"]),
            eps=float(optim_cfg["eps"]),
            weight_decay=float(optim_cfg["weight_decay"]),
        )
        schedule = warmup_cosine_schedule(
            int(optim_cfg["warmup_steps"]), self.max_steps, float(optim_cfg["min_lr_ratio"])
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    # ------------------------------------------------------------------------------ resumption

    def _resume(self, resume: str | Path | bool) -> None:
        """Continue from checkpoint `resume`, or with True from the newest one that reads back (a damaged newest
        checkpoint, e.g. from a full disk, is reported and the previous one taken)."""
        if resume is True:
            candidates = [directory for _, directory in reversed(ckpt.list_checkpoints(self.run_dir))]
            if not candidates:
                if self.ctx.is_main:
                    print(f"[train] no checkpoint under {self.run_dir}; starting from step 0")
                return
        else:
            candidates = [Path(resume)]
        for index, directory in enumerate(candidates):
            try:
                state = ckpt.load_checkpoint(
                    directory, self.model, self.module, self.optimizer, self.scheduler, rank=self.ctx.rank
                )
            except Exception as err:  # truncated or damaged files raise assorted errors
                if index + 1 < len(candidates):
                    logger.warning(
                        "checkpoint %s is damaged (%s); resuming from %s", directory, err, candidates[index + 1]
                    )
                    continue
                raise InputError(
                    "cannot resume: checkpoint {path} is damaged ({error}){others}",
                    path=directory,
                    error=err,
                    others="" if len(candidates) == 1 else ", and so are the older ones",
                ) from None
            break
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        if self.ctx.is_main:
            _truncate_metrics(self.run_dir / METRICS_FILE, self.step)
            print(f"[train] resumed from {directory} at step {self.step}")

    def save_checkpoint(self) -> Path:
        extra = {
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "world_size": self.ctx.world_size,
            "config": json.loads(json.dumps(self.config)),
        }
        return ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.module,
            self.optimizer,
            self.scheduler,
            extra,
            keep_last=self.keep_last,
            is_main=self.ctx.is_main,
        )

    # ------------------------------------------------------------------------------------- data

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Endless stream of batches; position (epoch, batch index) is tracked for exact resumption."""
        while True:
            iterator = self.loader.iterate(epoch=self.epoch, skip=self.batches_in_epoch)
            for batch in iterator:
                self.batches_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batches_in_epoch = 0

    # ---------------------------------------------------------------------------------- one step

    def compute_loss(self, batch: Mapping[str, Any], micro_step: int) -> tuple[Tensor, dict[str, Tensor]]:
        device = self.ctx.device
        batch = {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}
        images = batch["images"]
        targets = self.loss_fn.prepare_targets(batch)
        query_points = None
        if self.module.track_head is not None and self.loss_fn.wants_tracks():
            generator = torch.Generator().manual_seed(
                rank_seed(
                    self.seed + TRACK_SEED_OFFSET * (self.step * self.accum_steps + micro_step + 1), self.ctx.rank
                )
            )
            query_points = self.loss_fn.add_track_targets(targets, generator)
        with autocast(device, self.autocast_dtype):
            predictions = self.model(images, query_points=query_points)
        return self.loss_fn.total_and_terms(predictions, targets)

    def _sync_context(self, last_micro_step: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-step of an accumulation."""
        if last_micro_step or not self.ctx.enabled:
            return contextlib.nullcontext()
        if hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2

            @contextlib.contextmanager
            def no_fsdp_sync():
                self.model.set_requires_gradient_sync(False)
                try:
                    yield
                finally:
                    self.model.set_requires_gradient_sync(True)

            return no_fsdp_sync()
        return contextlib.nullcontext()

    def train_step(self, batches: Iterator[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over `accum_steps` micro-batches; returns this rank's metrics."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for micro in range(self.accum_steps):
            batch = next(batches)
            with self._sync_context(micro == self.accum_steps - 1):
                loss, terms = self.compute_loss(batch, micro)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step}")
                (loss / self.accum_steps).backward()
            for name, value in {"loss": loss, **terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
                counts[name] = counts.get(name, 0) + 1
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics = {name: sums[name] / counts[name] for name in sums}
        metrics["grad_norm"] = float(grad_norm)
        metrics["lr"] = lr
        return metrics

    # ---------------------------------------------------------------------------------- the loop

    def train(self) -> dict[str, Any]:
        """Run until `optim.max_steps`; returns the last logged metrics."""
        from tqdm.auto import tqdm

        batches = self._batches()
        progress = tqdm(total=self.max_steps, initial=self.step, disable=not self.show_progress, desc="train")
        stop = StopRequest()
        with stop.catching_signals():
            last = self._loop(batches, progress, stop)
        progress.close()
        if stop.signal is not None:
            raise stop.interruption(self.run_dir, self.step)
        if self.ctx.enabled and self.config["distributed"]["strategy"] == "ddp":
            self._check_replicas()
        self._export_final()
        if self._writer is not None:
            self._writer.close()
        barrier()
        return last

    def _loop(self, batches: Iterator[dict[str, Any]], progress: Any, stop: StopRequest) -> dict[str, Any]:
        """Steps until `optim.max_steps`, or until a stop is requested (then with a checkpoint of the last step)."""
        last: dict[str, Any] = {}
        step_start = time.perf_counter()
        while self.step < self.max_steps:
            metrics = self.train_step(batches)
            metrics["step_time"] = time.perf_counter() - step_start
            step_start = time.perf_counter()
            validating = self.validation.due(self.step, self.max_steps)
            if validating and self.ctx.is_main:
                dtype = self.autocast_dtype or torch.float32
                metrics.update(validate(self.module, self.validation_scenes, self.validation, self.ctx.device, dtype))
            if self.step % self.log_every == 0 or self.step == self.max_steps or validating:
                last = self._log(metrics)
                progress.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{last['lr']:.2e}")
            progress.update(1)
            stopping = stop.agreed()
            if self.step % self.checkpoint_every == 0 or self.step == self.max_steps or stopping:
                self.save_checkpoint()
            if stopping:
                break
        return last

    def _log(self, metrics: dict[str, float]) -> dict[str, Any]:
        merged = all_gather_metrics(metrics)
        record = {"step": self.step, **merged}
        if self.ctx.is_main:
            with open(self.run_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self._writer is not None:
                for name, value in merged.items():
                    self._writer.add_scalar(name if name.startswith("val/") else f"train/{name}", value, self.step)
            if self._curves is not None:
                self._curves.update(force=self.step == self.max_steps)
        return record

    def _check_replicas(self) -> None:
        """Fingerprint every rank's parameters; write them to `<run_dir>/replicas.json` and fail if they differ."""
        everyone = all_gather_objects(parameter_fingerprint(self.module))
        if self.ctx.is_main:
            (self.run_dir / REPLICAS_FILE).write_text(json.dumps({"fingerprints": everyone}, indent=2))
        if len(set(everyone)) != 1:
            raise RuntimeError(f"DDP replicas diverged: parameter fingerprints per rank {everyone}")

    def _export_final(self) -> None:
        """`<run_dir>/final`: plain VGGT weights (adapters folded in) for `VGGT.from_pretrained`."""
        state = ckpt.full_model_state_dict(self.model)
        if self.ctx.is_main:
            plain = lora.merged_state_dict(self.module) if lora.has_lora(self.module) else state
            save_model_dir(self.run_dir / FINAL_MODEL_DIR, plain, self.module.config)


# ------------------------------------------------------------------------------------- helpers


def parameter_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in name order: equal fingerprints mean bitwise-equal weights."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _validation_setup(config: Mapping[str, Any]) -> tuple[ValidationConfig, list[Path]]:
    """The `validation` section and its scene folders (none when it is off)."""
    validation = ValidationConfig.from_dict(config.get("validation"))
    if not validation.enabled:
        return validation, []
    if config["distributed"]["strategy"] == "fsdp":
        raise ValueError("validation runs on rank 0 alone, which FSDP's sharded model cannot; use ddp or drop it")
    return validation, find_scene_dirs(validation.scenes)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop log lines past the checkpoint we resume from (written by the run that was interrupted)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def _dump_yaml(config: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False)
