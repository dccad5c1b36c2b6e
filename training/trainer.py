"""The training loop: model set-up (presets, pretrained weights, heads, LoRA), bf16 autocast, gradient
accumulation, validation, checkpoints and exact resumption. The optimizer, schedule, freezing and clipping live
in training.optim, the logs in training.run_log, checkpoint files in training.checkpoint.

    trainer = Trainer(config)          # config: the dict `training.train.load_config` returns
    summary = trainer.train()

Every logged step appends one JSON object to `<run_dir>/metrics.jsonl` (step, loss, every loss term, lr,
grad_norm, and `val/...` held-out metrics at validation steps: training.validation), writes the same scalars
to TensorBoard under `<run_dir>/tensorboard` and redraws `<run_dir>/curves.png` (training.plot).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training import checkpoint as ckpt
from training import lora
from training.distributed import (
    DistributedContext,
    all_gather_metrics,
    barrier,
    check_replicas,
    rank_seed,
    seed_everything,
    setup_distributed,
    unwrap_model,
    wrap_model,
)
from training.interrupt import StopRequest
from training.losses import LossConfig, build_loss
from training.observe import StepProfiler, memory_peaks, step_costs
from training.optim import GradientClipper, build_optimizer, freeze_parameters
from training.run_log import RunLog
from training.validation import validate, validation_setup
from vggt.errors import InputError
from vggt.models.build import build_model as load_model
from vggt.models.checkpoint import save_model_dir
from vggt.models.config import HEAD_NAMES
from vggt.utils.device import autocast, resolve_dtype
from vggt.utils.files import check_writable_folder

FINAL_MODEL_DIR = "final"
REPLICAS_FILE = "replicas.json"
# Offsets that keep the seeds of different random streams apart.
TRACK_SEED_OFFSET = 7_919


# ---------------------------------------------------------------------------------- model set-up


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
        self.optimizer, self.scheduler = build_optimizer(self.module, optim_cfg)
        self.clipper = GradientClipper(self.module, optim_cfg)
        self.loss_fn = build_loss(LossConfig.from_dict(config["loss"]))
        self.autocast_dtype = resolve_dtype(self.ctx.device, config["precision"], training=True)
        self.scaler = _gradient_scaler(self.ctx.device, self.autocast_dtype, dist_cfg["strategy"])

        from training.data import DataConfig, build_train_loader

        data_cfg = DataConfig.from_dict(config["data"])
        self.frames_per_gpu = data_cfg.frames_per_gpu
        self.loader = build_train_loader(data_cfg, rank=self.ctx.rank, world_size=self.ctx.world_size, seed=self.seed)
        self._pending_checkpoint: ckpt.PendingCheckpoint | None = None
        self.step = 0
        self.epoch = 0
        self.batches_in_epoch = 0  # batches of the current epoch already consumed

        self.validation, self.validation_scenes = validation_setup(config)
        if config["hub"]["repo_id"]:  # a bad id is refused now, not after the run
            from training.hub import check_repo_id

            check_repo_id(config["hub"]["repo_id"])
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
        self.run_log = RunLog(self.run_dir, log_cfg, config, self.step) if self.ctx.is_main else None
        self.show_progress = bool(log_cfg["progress"]) and self.ctx.is_main
        self.profiler = StepProfiler(self.run_dir, log_cfg["profile"], self.ctx.rank)

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
            lora.apply_lora(
                model,
                rank=int(lora_cfg["rank"]),
                alpha=float(lora_cfg["alpha"]),
                dropout=float(lora_cfg["dropout"]),
                target_modules=lora_cfg["target_modules"],
            )
            lora.train_fully(model, list(lora_cfg["train_fully"] or []))
        self.frozen = freeze_parameters(model, list(config["optim"]["freeze"] or []))
        model.to(self.ctx.device)
        model.train()
        self.model = wrap_model(
            model, self.ctx, dist_cfg["strategy"], find_unused_parameters=bool(dist_cfg["find_unused_parameters"])
        )
        self.module = unwrap_model(self.model)

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
        directory, state = ckpt.load_first_readable(
            candidates,
            lambda path: ckpt.load_checkpoint(path, self.model, self.optimizer, self.scheduler, rank=self.ctx.rank),
        )
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        saved_world = int(state["world_size"])
        if saved_world != self.ctx.world_size:
            saved_frames = int(state.get("frames_per_step", 0)) or None
            self.accum_steps = ckpt.accumulation_keeping_batch(
                saved_frames, self.frames_per_gpu, self.ctx.world_size, self.accum_steps, directory
            )
            # The sampler shards each step's batch by process count: continue from the next epoch's start.
            self.epoch, self.batches_in_epoch = self.epoch + 1, 0
        if self.ctx.is_main:
            note = "" if saved_world == self.ctx.world_size else f" (from {saved_world} processes)"
            print(f"[train] resumed from {directory} at step {self.step}{note}, accum_steps={self.accum_steps}")

    def save_checkpoint(self) -> Path:
        """Checkpoint the current step (the previous background save, if any, is finished first)."""
        self.finish_checkpoint()
        extra = {
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "world_size": self.ctx.world_size,
            "frames_per_step": self.frames_per_gpu * self.ctx.world_size * self.accum_steps,
            "scaler": self.scaler.state_dict(),
            "config": json.loads(json.dumps(self.config)),
        }
        pending = ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.module,
            self.optimizer,
            self.scheduler,
            extra,
            keep_last=self.keep_last,
            is_main=self.ctx.is_main,
            plain_weights=bool(self.config["checkpoint"]["plain_weights"]),
            async_save=bool(self.config["checkpoint"]["async_save"]),
        )
        self._pending_checkpoint = pending if self.config["checkpoint"]["async_save"] else None
        return pending.final

    def finish_checkpoint(self) -> None:
        """Wait until a checkpoint written in the background is complete and in place."""
        if self._pending_checkpoint is not None:
            self._pending_checkpoint.finish()
            self._pending_checkpoint = None

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
        step_start, data_time, frames = time.perf_counter(), 0.0, 0
        for micro in range(self.accum_steps):
            data_start = time.perf_counter()
            batch = next(batches)
            data_time += time.perf_counter() - data_start
            frames += batch["images"].shape[0] * batch["images"].shape[1]
            with self._sync_context(micro == self.accum_steps - 1):
                loss, terms = self.compute_loss(batch, micro)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step}")
                self.scaler.scale(loss / self.accum_steps).backward()
            for name, value in {"loss": loss, **terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
                counts[name] = counts.get(name, 0) + 1
        self.scaler.unscale_(self.optimizer)  # (without fp16 these scaler calls do nothing but optimizer.step)
        grad_norms = self.clipper.clip()
        lr = self.optimizer.param_groups[-1]["lr"]  # the last group follows optim.lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics = {name: sums[name] / counts[name] for name in sums}
        metrics.update(grad_norms)
        metrics.update(step_costs(time.perf_counter() - step_start, data_time, frames, self.ctx.world_size))
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
        self.finish_checkpoint()
        progress.close()
        if stop.signal is not None:
            raise stop.interruption(self.run_dir, self.step)
        if self.ctx.enabled and self.config["distributed"]["strategy"] == "ddp":
            check_replicas(self.module, self.run_dir / REPLICAS_FILE, self.ctx.is_main)
        self._export_final()
        if self.run_log is not None:
            self.run_log.close()
        barrier()
        hub_cfg = self.config["hub"]
        if hub_cfg["repo_id"] and self.ctx.is_main:  # after the barrier: the other ranks need not wait for it
            from training.hub import push_model_folder

            message = f"vggt train: {self.run_dir.name}, step {self.step}"
            url = push_model_folder(self.run_dir / FINAL_MODEL_DIR, hub_cfg, message)
            print(f"[train] pushed {self.run_dir / FINAL_MODEL_DIR} to {hub_cfg['repo_id']}: {url}")
        return last

    def _loop(self, batches: Iterator[dict[str, Any]], progress: Any, stop: StopRequest) -> dict[str, Any]:
        """Steps until `optim.max_steps`, or until a stop is requested (then with a checkpoint of the last step)."""
        last: dict[str, Any] = {}
        while self.step < self.max_steps:
            self.profiler.before_step(self.step)
            metrics = self.train_step(batches)
            self.profiler.after_step(self.step)
            validating = self.validation.due(self.step, self.max_steps)
            if validating:
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
        merged = all_gather_metrics({**metrics, **memory_peaks(self.ctx.device)})
        record = {"step": self.step, **merged}
        if self.run_log is not None:
            self.run_log.write(record, final=self.step == self.max_steps)
        return record

    def _export_final(self) -> None:
        """`<run_dir>/final`: plain VGGT weights (adapters folded in) for `VGGT.from_pretrained`."""
        state = ckpt.full_model_state_dict(self.model)
        if self.ctx.is_main:
            save_model_dir(
                self.run_dir / FINAL_MODEL_DIR, lora.plain_state_dict(self.module, state), self.module.config
            )


def _gradient_scaler(device: torch.device, dtype: torch.dtype | None, strategy: str) -> torch.amp.GradScaler:
    """A loss scaler for float16 autocast (whose small gradients would underflow); disabled otherwise."""
    fp16 = dtype == torch.float16
    if fp16 and strategy == "fsdp":  # each rank sees only its gradient shards: the ranks agree on overflows
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(device.type)
    return torch.amp.GradScaler(device.type, enabled=fp16)
