"""The trainer on the tiny preset and synthetic scenes: learning, exact resumption, freezing, LoRA, configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG

from training import checkpoint as ckpt
from training.train import load_config, parse_override
from training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]

# 1 sample of 2 frames at 56 x 70 per step, without the (slow) track head unless a test adds it.
SMALL_RUN = [*SMALL_TRAINING_RUN, "data.frames_per_gpu=2"]


def tiny_config(run_dir: Path, *overrides: str) -> dict:
    return load_config(TINY_TRAINING_CONFIG, [*SMALL_RUN, f"run_dir={run_dir}", *overrides])


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_tiny_preset_learns_synthetic_scenes(tmp_path):
    steps = 40
    config = tiny_config(tmp_path, f"optim.max_steps={steps}", "optim.warmup_steps=10", "logging.tensorboard=true")
    Trainer(config).train()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    for key in ("loss", "lr", "grad_norm", "camera", "camera_T", "depth", "depth_grad", "point"):
        assert all(key in r and r[key] == r[key] for r in records), key
    first = sum(r["loss"] for r in records[:5]) / 5
    last = sum(r["loss"] for r in records[-10:]) / 10
    assert last <= 0.5 * first, f"loss went from {first:.3f} to {last:.3f}"
    assert any((tmp_path / "tensorboard").iterdir())
    from vggt.models.vggt import VGGT

    model = VGGT.from_pretrained(tmp_path / "final")
    assert not model.config.enable_track  # the run's heads, in the saved config


def test_killed_run_resumes_bitwise_identically(tmp_path):
    overrides = ["optim.max_steps=8", "optim.warmup_steps=2", "checkpoint.every=2", "checkpoint.keep_last=2"]
    reference = Trainer(tiny_config(tmp_path / "uninterrupted", *overrides))
    reference.train()

    killed_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "training.train", "--config", str(TINY_TRAINING_CONFIG)]
    command += [*SMALL_RUN, f"run_dir={killed_dir}", *overrides]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ckpt.list_checkpoints(killed_dir) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    interrupted_at = ckpt.list_checkpoints(killed_dir)[-1][0]
    assert interrupted_at < 8 and not (killed_dir / "final").exists()

    resumed = Trainer(tiny_config(killed_dir, *overrides), resume=True)
    assert resumed.step == interrupted_at
    resumed.train()
    expected, actual = parameters(reference.module), parameters(resumed.module)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resuming"
    assert [r["step"] for r in read_metrics(killed_dir)] == list(range(1, 9))
    reference_losses = [r["loss"] for r in read_metrics(tmp_path / "uninterrupted")]
    assert [r["loss"] for r in read_metrics(killed_dir)] == reference_losses


def test_existing_run_dir_needs_resume(tmp_path):
    Trainer(tiny_config(tmp_path, "optim.max_steps=1")).train()
    with pytest.raises(ValueError, match="resume=True"):
        Trainer(tiny_config(tmp_path, "optim.max_steps=1"))


def test_frozen_modules_receive_no_update(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "optim.max_steps=2", "optim.freeze=[aggregator.*]", "optim.lr=1e-2"))
    before = parameters(trainer.module)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    trainer.train()
    after = parameters(trainer.module)
    frozen = [name for name in before if name.startswith("aggregator.")]
    assert frozen and set(frozen) == set(trainer.frozen)
    for name, param in trainer.module.named_parameters():
        if name.startswith("aggregator."):
            assert id(param) not in optimized
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["camera_head.trunk.0.attn.qkv.weight"], after["camera_head.trunk.0.attn.qkv.weight"])


def test_freeze_pattern_that_matches_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="match no parameter"):
        Trainer(tiny_config(tmp_path, "optim.freeze=[encoder.*]"))


def test_lora_trains_only_adapters_and_merges_into_plain_checkpoint(tmp_path):
    from vggt.models.vggt import VGGT

    trainer = Trainer(tiny_config(tmp_path, "optim.max_steps=3", "optim.lr=1e-2", "lora.enabled=true", "lora.rank=4"))
    trainable = [name for name, p in trainer.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    before = parameters(trainer.module)
    trainer.train()
    after = parameters(trainer.module)
    for name in before:
        if "lora_" not in name:
            assert torch.equal(before[name], after[name]), f"base weight {name} changed"
    lora_b = [name for name in after if "lora_B" in name]
    assert lora_b and any(after[name].abs().sum() > 0 for name in lora_b)  # B starts at zero

    merged = VGGT.from_pretrained(tmp_path / "final")  # strict: exactly the plain VGGT keys
    assert not any("lora_" in name or "base_layer" in name for name in merged.state_dict())
    qkv = "aggregator.frame_blocks.0.attn.qkv.weight"
    assert not torch.equal(merged.state_dict()[qkv], before["aggregator.frame_blocks.0.attn.qkv.base_layer.weight"])
    images = torch.rand(1, 2, 3, 56, 70, generator=torch.Generator().manual_seed(0))
    trainer.module.eval()
    merged.eval()
    with torch.no_grad():
        adapted, plain = trainer.module(images), merged(images)
    for key in ("pose_enc", "depth", "world_points"):
        torch.testing.assert_close(plain[key], adapted[key], atol=1e-4, rtol=1e-4)


def test_track_head_and_camera_only_batches(tmp_path):
    Trainer(tiny_config(tmp_path / "track", "optim.max_steps=1", "model.heads=[camera,depth,point,track]")).train()
    record = read_metrics(tmp_path / "track")[-1]
    assert {"track", "track_position", "track_visibility"} <= set(record)

    Trainer(tiny_config(tmp_path / "cameras", "optim.max_steps=1", "data.use_depth=false")).train()
    record = read_metrics(tmp_path / "cameras")[-1]
    assert "camera" in record and not any(key.startswith(("depth", "point")) for key in record)


def test_config_overrides_and_errors(tmp_path):
    assert parse_override("optim.freeze=[a.*, b]") == {"optim": {"freeze": ["a.*", "b"]}}
    config = load_config(TINY_TRAINING_CONFIG, ["optim.lr=3e-4", "data.frames_per_gpu=6", "loss.track.weight=0.1"])
    assert config["optim"]["lr"] == pytest.approx(3e-4)
    assert config["data"]["frames_per_gpu"] == 6 and config["data"]["source"] == "synthetic"  # merged, not replaced
    assert config["loss"]["track"] == {"weight": 0.1, "num_queries": 32}
    with pytest.raises(ValueError, match="unknown config key 'optim.learning_rate'"):
        load_config(TINY_TRAINING_CONFIG, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="dotted.key=value"):
        parse_override("optim.lr")
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["tiny_synthetic", "finetune_custom", "finetune_lora", "vggt1b_paper"])
def test_shipped_configs_load(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config["run_dir"] and config["optim"]["max_steps"] > 0


def test_lora_finetuning_from_pretrained_resumes_exactly(tmp_path):
    from vggt.models.vggt import VGGT

    torch.manual_seed(3)
    VGGT.from_preset("tiny").save_pretrained(tmp_path / "base")
    overrides = [
        f"model.pretrained={tmp_path / 'base'}",
        "model.heads=[camera,depth]",  # the loaded point and track heads are dropped
        "lora.enabled=true",
        "lora.rank=4",
        "optim.lr=1e-2",
        "optim.max_steps=4",
    ]
    straight = Trainer(tiny_config(tmp_path / "straight", *overrides))
    assert straight.module.point_head is None and straight.module.track_head is None
    straight.train()

    interrupted = Trainer(tiny_config(tmp_path / "resumed", *overrides))
    batches = interrupted._batches()
    interrupted.train_step(batches)
    interrupted.train_step(batches)
    interrupted.save_checkpoint()
    del interrupted
    resumed = Trainer(tiny_config(tmp_path / "resumed", *overrides), resume=True)
    assert resumed.step == 2
    resumed.train()
    expected, actual = parameters(straight.module), parameters(resumed.module)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resuming"
    merged = VGGT.from_pretrained(tmp_path / "resumed" / "final")
    assert merged.config.enable_depth and not merged.config.enable_point


def test_run_draws_learning_curves_and_plot_overlays_runs(tmp_path):
    from PIL import Image

    Trainer(tiny_config(tmp_path / "a", "optim.max_steps=3")).train()
    Trainer(tiny_config(tmp_path / "b", "optim.max_steps=3", "optim.lr=1e-4")).train()
    for run in ("a", "b"):
        with Image.open(tmp_path / run / "curves.png") as image:
            pixels = np.asarray(image.convert("RGB"))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # axes, text and curves, not a blank canvas

    out = tmp_path / "both.png"
    command = [sys.executable, "-m", "training.plot", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["both.png"]
    with Image.open(out) as image:
        assert image.format == "PNG" and len(np.unique(np.asarray(image.convert("L")))) > 10
    result = subprocess.run([*command[:3], str(tmp_path / "missing")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "metrics.jsonl" in result.stderr


def test_validation_logs_held_out_metrics_without_changing_training(tmp_path):
    from vggt.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "held_out", 1, num_frames=2, height=56, width=70, seed=100)
    validation = [f"validation.scenes=[{tmp_path / 'held_out'}]", "validation.every=2", "logging.log_every=3"]
    validated = Trainer(tiny_config(tmp_path / "validated", "optim.max_steps=3", *validation))
    validated.train()
    records = {r["step"]: r for r in read_metrics(tmp_path / "validated")}
    assert sorted(records) == [2, 3]  # step 2 is logged for its validation, step 3 is the last step
    for step in (2, 3):
        assert 0 <= records[step]["val/camera_AUC@30"] <= 100
        assert records[step]["val/depth_abs_rel"] > 0 and "loss" in records[step]

    plain = Trainer(tiny_config(tmp_path / "plain", "optim.max_steps=3", "logging.log_every=3"))
    plain.train()
    expected, actual = parameters(plain.module), parameters(validated.module)
    assert all(torch.equal(expected[name], actual[name]) for name in expected)

    with pytest.raises(ValueError, match="validation.scenes"):
        Trainer(tiny_config(tmp_path / "bad", f"validation.scenes=[{tmp_path / 'nowhere'}]"))


def test_finetune_config_follows_the_reference_defaults():
    config = load_config(REPO / "configs" / "finetune_custom.yaml")
    from training.losses import LossConfig

    loss = LossConfig.from_dict(config["loss"])
    assert config["optim"]["freeze"] == ["aggregator.*"] and config["optim"]["lr"] == pytest.approx(5e-5)
    assert config["optim"]["weight_decay"] == pytest.approx(0.05)
    assert loss.averaging == "batch" and loss.camera.weight == 5.0 and loss.camera.loss_type == "l1"
    assert (loss.depth.gradient_loss_fn, loss.depth.valid_range) == ("grad", 0.98)
    assert loss.point is None and loss.track is None and config["model"]["heads"] == ["camera", "depth"]
