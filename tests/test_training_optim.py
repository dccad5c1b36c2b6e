"""Parameter groups, gradient clipping per module group, LoRA with heads trained in full, fp16 with a scaler."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG

from training.config import DEFAULT_CONFIG
from training.optim import GradientClipper, build_optimizer, warmup_cosine_schedule
from training.train import load_config
from training.trainer import Trainer
from vggt.models.vggt import VGGT


def optim_config(**keys) -> dict:
    return {**DEFAULT_CONFIG["optim"], **keys}


def tiny_config(run_dir: Path, *overrides: str) -> dict:
    small = [*SMALL_TRAINING_RUN, "data.frames_per_gpu=2", "checkpoint.plain_weights=false"]
    return load_config(TINY_TRAINING_CONFIG, [*small, f"run_dir={run_dir}", *overrides])


def test_warmup_then_cosine_schedule():
    schedule = warmup_cosine_schedule(warmup_steps=4, total_steps=12, min_ratio=0.1)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(8) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(12) == pytest.approx(0.1)


def test_parameter_groups_take_their_own_lr_and_weight_decay():
    model = VGGT.from_preset("tiny")
    groups = [{"params": ["aggregator.*"], "lr": 1e-5, "weight_decay": 0.0}, {"params": ["re:^camera_head\\."]}]
    optimizer, scheduler = build_optimizer(model, optim_config(lr=1e-3, weight_decay=0.05, param_groups=groups))
    aggregator, camera, rest = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("aggregator.") for p in aggregator["params"])
    assert (aggregator["lr"], aggregator["weight_decay"]) == (1e-5, 0.0)
    assert all(names[id(p)].startswith("camera_head.") for p in camera["params"])
    assert (camera["lr"], camera["weight_decay"]) == (1e-3, 0.05)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    assert not any(names[id(p)].startswith(("aggregator.", "camera_head.")) for p in rest["params"])
    with pytest.raises(ValueError, match=r"optim.param_groups\[0\].params \['encoder.\*'\] match no"):
        build_optimizer(model, optim_config(param_groups=[{"params": ["encoder.*"], "lr": 1.0}]))
    with pytest.raises(ValueError, match="must be a mapping with `params"):
        build_optimizer(model, optim_config(param_groups=[{"params": ["aggregator.*"], "momentum": 0.9}]))


def test_each_clip_group_is_clipped_on_its_own_norm():
    model = VGGT.from_preset("tiny")
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    specs = [
        {"name": "aggregator", "params": ["aggregator.*"], "max_norm": 1.0},
        {"name": "camera", "params": ["camera_head.*"], "max_norm": 0.5},
    ]
    clipper = GradientClipper(model, optim_config(grad_clip=2.0, clip_groups=specs))
    sizes = {name: sum(p.numel() for p in params) for name, params, _ in clipper.groups}
    metrics = clipper.clip()
    for name, params, max_norm in clipper.groups:
        assert metrics[f"grad_norm/{name}"] == pytest.approx(math.sqrt(sizes[name]), rel=1e-5)  # before clipping
        clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        assert clipped.item() == pytest.approx(max_norm, rel=1e-4), name
    assert [name for name, _, _ in clipper.groups] == ["aggregator", "camera", "rest"]
    assert metrics["grad_norm"] == pytest.approx(math.sqrt(sum(sizes.values())), rel=1e-5)


def test_lora_with_a_head_trained_in_full(tmp_path):
    overrides = ["optim.max_steps=2", "optim.lr=1e-2", "lora.enabled=true", "lora.rank=2"]
    trainer = Trainer(tiny_config(tmp_path, *overrides, "lora.train_fully=[depth_head.*]"))
    before = {name: p.detach().clone() for name, p in trainer.module.named_parameters()}
    trainer.train()
    after = dict(trainer.module.named_parameters())
    depth = [name for name in before if name.startswith("depth_head.") and "lora_" not in name]
    assert depth and any(not torch.equal(before[name], after[name]) for name in depth)
    frozen = [name for name in before if name.startswith("aggregator.") and "lora_" not in name]
    assert frozen and all(torch.equal(before[name], after[name]) for name in frozen)
    merged = VGGT.from_pretrained(tmp_path / "final").state_dict()
    assert torch.equal(
        merged["depth_head.scratch.output_conv2.2.weight"], after["depth_head.scratch.output_conv2.2.weight"]
    )
    with pytest.raises(ValueError, match="lora.train_fully patterns"):
        Trainer(tiny_config(tmp_path / "bad", *overrides, "lora.train_fully=[heads.*]"))


def test_fp16_trains_with_a_gradient_scaler(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "precision=fp16", "device=cpu", "optim.max_steps=2"))
    assert trainer.autocast_dtype == torch.float16 and trainer.scaler.is_enabled()
    trainer.train()
    # two finite steps: the scale kept, two steps counted towards its growth
    assert trainer.scaler.state_dict()["_growth_tracker"] == 2
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    from training.trainer import _gradient_scaler

    fsdp_scaler = _gradient_scaler(torch.device("cpu"), torch.float16, "fsdp")  # the ranks agree on overflows
    assert isinstance(fsdp_scaler, ShardedGradScaler) and fsdp_scaler.is_enabled()
    assert not _gradient_scaler(torch.device("cpu"), torch.bfloat16, "ddp").is_enabled()


def test_logged_steps_carry_costs_and_a_profile_is_written(tmp_path):
    config = tiny_config(tmp_path, "optim.max_steps=3", "logging.profile={start: 1, steps: 1}")
    Trainer(config).train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert 0 < record["data_time"] < record["step_time"]
        assert record["compute_time"] == pytest.approx(record["step_time"] - record["data_time"])
        assert record["frames_per_s"] == pytest.approx(2 / record["step_time"])  # 1 sample of 2 frames per step
        assert record["host_peak_gb"] > 0.1
    trace = json.loads((tmp_path / "profile" / "trace_rank0.json").read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any("conv2d" in name for name in names) and any("AdamW" in name or "adamw" in name for name in names)
    with pytest.raises(ValueError, match="logging.profile: unknown keys"):
        Trainer(tiny_config(tmp_path / "bad", "logging.profile={every: 3}"))
