"""Sharded (torch.distributed.checkpoint) training checkpoints: every recipe resumes bitwise, export, re-sharding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG

from training import checkpoint as ckpt
from training.observe import TIMING_METRICS
from training.train import load_config
from training.trainer import Trainer

SMALL_RUN = [*SMALL_TRAINING_RUN, "data.frames_per_gpu=2", "optim.lr=1e-2", "checkpoint.plain_weights=false"]
STEPS = 4
REPO = Path(__file__).resolve().parents[1]
INTERRUPTED_AT = 2


def tiny_config(run_dir: Path, *overrides: str) -> dict:
    return load_config(TINY_TRAINING_CONFIG, [*SMALL_RUN, f"run_dir={run_dir}", f"optim.max_steps={STEPS}", *overrides])


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timings and memory figures (which depend on the machine's load)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_METRICS} for line in lines]


def interrupted_run(run_dir: Path, *overrides: str) -> Trainer:
    """Train INTERRUPTED_AT steps, checkpoint, drop the trainer, then resume in a fresh one and finish."""
    first = Trainer(tiny_config(run_dir, *overrides))
    batches = first._batches()
    for _ in range(INTERRUPTED_AT):
        first._log(first.train_step(batches))
    first.save_checkpoint()
    first.finish_checkpoint()  # (a background save is complete once this returns)
    del first, batches
    resumed = Trainer(tiny_config(run_dir, *overrides), resume=True)
    assert resumed.step == INTERRUPTED_AT  # the checkpoint itself, not a fallback to an older one
    resumed.train()
    return resumed


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    expected_state, actual_state = expected.state_dict(), actual.state_dict()
    assert expected_state.keys() == actual_state.keys()
    for name, value in expected_state.items():
        assert torch.equal(value, actual_state[name]), f"{name} differs after resuming"


RECIPES = {
    # The track loss never reads the tracker's confidence output: those parameters never get a gradient.
    "all_four_heads": ["model.heads=[camera,depth,point,track]", "loss.track.num_queries=4"],
    # Batches without depth leave the depth head without gradients.
    "camera_only": ["model.heads=[camera,depth]", "data.use_depth=false"],
    "frozen_aggregator": ["optim.freeze=[aggregator.*]"],
    "lora": ["lora.enabled=true", "lora.rank=2"],
    "accumulation": ["optim.accum_steps=2"],
    # Shards written by a background thread while the next steps change the weights.
    "async_save": ["checkpoint.async_save=true", "checkpoint.every=1"],
    # float16 autocast on the CPU with torch.amp.GradScaler("cpu"): its scale and growth count are resumed too.
    "fp16_scaler": ["precision=fp16"],
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(tmp_path, recipe):
    overrides = RECIPES[recipe]
    straight = Trainer(tiny_config(tmp_path / "straight", *overrides))
    straight.train()
    resumed = interrupted_run(tmp_path / "resumed", *overrides)
    assert_same_weights(straight.module, resumed.module)
    assert records(tmp_path / "resumed") == records(tmp_path / "straight")
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()
    for name, state in straight.optimizer.state_dict()["state"].items():
        resumed_state = resumed.optimizer.state_dict()["state"][name]
        assert all(torch.equal(value, resumed_state[key]) for key, value in state.items()), name


def test_checkpoint_holds_shards_and_exports_to_a_loadable_model(tmp_path):
    from vggt.models.vggt import VGGT

    trainer = Trainer(tiny_config(tmp_path, "optim.max_steps=1", "lora.enabled=true", "lora.rank=2"))
    trainer.train()
    directory = ckpt.latest_checkpoint(tmp_path)
    assert (directory / ckpt.SHARDS_DIRNAME / ".metadata").is_file()
    assert not (directory / "model.safetensors").exists()  # checkpoint.plain_weights=false
    command = [sys.executable, "-m", "vggt", "train", "--export", str(tmp_path), str(tmp_path / "exported")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    exported = VGGT.from_pretrained(tmp_path / "exported")
    final = VGGT.from_pretrained(tmp_path / "final")
    assert_same_weights(final, exported)
    assert not any("lora_" in name for name in exported.state_dict())
    with pytest.raises(ValueError, match="neither a training checkpoint"):
        ckpt.export_checkpoint(tmp_path / "final", tmp_path / "again")


def test_old_layout_and_unreachable_batch_are_refused_in_one_line(tmp_path):
    Trainer(tiny_config(tmp_path, "optim.max_steps=1")).train()
    directory = ckpt.latest_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"4 frames per step, which 3 processes .* divides 4"):
        ckpt.accumulation_keeping_batch(4, 2, 3, 1, directory)
    assert ckpt.accumulation_keeping_batch(8, 2, 2, 1, directory) == 2
    assert ckpt.accumulation_keeping_batch(8, 2, 4, 1, directory) == 1
    import shutil

    shutil.rmtree(directory / ckpt.SHARDS_DIRNAME)
    with pytest.raises(ValueError, match="before sharded checkpoints"):
        Trainer(tiny_config(tmp_path, "optim.max_steps=2"), resume=directory)


def test_background_save_holds_the_weights_of_its_step_while_training_goes_on(tmp_path):
    overrides = ["checkpoint.async_save=true"]
    trainer = Trainer(tiny_config(tmp_path, *overrides))
    batches = trainer._batches()
    trainer.train_step(batches)
    saved = {name: value.clone() for name, value in trainer.module.state_dict().items()}
    trainer.save_checkpoint()
    assert not ckpt.list_checkpoints(tmp_path)  # not in place until finished
    trainer.train_step(batches)  # changes every weight while the shards are written
    trainer.finish_checkpoint()
    resumed = Trainer(tiny_config(tmp_path, *overrides), resume=True)
    assert resumed.step == 1
    for name, value in saved.items():
        assert torch.equal(value, resumed.module.state_dict()[name]), name
