"""The reference's Hydra-style training YAML: translated into our keys, or refused at the first key we cannot honour."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import load_config

# The reference's `defaults:` file, in its layout (data.train.common_config ...).
DEFAULTS_FILE = """
max_img_per_gpu: 48
data:
  train:
    max_img_per_gpu: ${max_img_per_gpu}
    common_config:
      img_nums: [2, 24]
      load_depth: True
      augs:
        aspects: [0.33, 1.0]
        color_jitter: {brightness: 0.5, contrast: 0.5, saturation: 0.5, hue: 0.1, p: 0.9}
"""

# A fine-tuning config in the reference's format (keys as in its training/config/*.yaml).
REFERENCE_CONFIG = """
defaults:
  - default_dataset.yaml
exp_name: finetune_test
img_size: 518
num_workers: 0
seed_value: 42
accum_steps: 4
patch_size: 14
limit_train_batches: 800
limit_val_batches: 400
data:
  train:
    _target_: data.dynamic_dataloader.DynamicTorchDataset
    num_workers: ${num_workers}
    common_config:
      img_size: ${img_size}
      patch_size: ${patch_size}
      debug: True
logging:
  log_dir: logs/${exp_name}
  log_freq: 1
  tensorboard_writer:
    _target_: train_utils.tb_writer.TensorBoardLogger
    path: ${logging.log_dir}/tensorboard
checkpoint:
  save_dir: logs/${exp_name}/ckpts
  save_freq: 5
loss:
  _target_: loss.MultitaskLoss
  camera: {weight: 5.0, loss_type: "l1"}
  depth: {weight: 1.0, gradient_loss_fn: "grad", valid_range: 0.98}
  point: null
  track: null
optim:
  param_group_modifiers: False
  optimizer: {_target_: torch.optim.AdamW, lr: 1e-4, weight_decay: 0.05}
  frozen_module_names: ["*aggregator*"]
  amp: {enabled: True, amp_dtype: bfloat16}
  gradient_clip:
    _target_: train_utils.gradient_clip.GradientClipper
    configs:
      - {module_name: ["aggregator"], max_norm: 1.0, norm_type: 2}
      - {module_name: ["depth"], max_norm: 1.0, norm_type: 2}
      - {module_name: ["camera"], max_norm: 1.0, norm_type: 2}
  options:
    lr:
      - scheduler:
          _target_: fvcore.common.param_scheduler.CompositeParamScheduler
          schedulers:
            - {_target_: fvcore.common.param_scheduler.LinearParamScheduler, start_value: 1e-8, end_value: 1e-4}
            - {_target_: fvcore.common.param_scheduler.CosineParamScheduler, start_value: 1e-4, end_value: 1e-8}
          lengths: [0.05, 0.95]
    weight_decay:
      - scheduler: {_target_: fvcore.common.param_scheduler.ConstantParamScheduler, value: 0.05}
max_epochs: 20
model:
  _target_: vggt.models.vggt.VGGT
  enable_camera: True
  enable_depth: True
  enable_point: False
  enable_track: False
distributed:
  backend: nccl
  find_unused_parameters: False
  timeout_mins: 30
"""


def write_reference(folder: Path, text: str) -> Path:
    (folder / "default_dataset.yaml").write_text(DEFAULTS_FILE)
    path = folder / "reference.yaml"
    path.write_text(text)
    return path


def test_reference_config_translates_into_our_keys(tmp_path):
    config = load_config(write_reference(tmp_path, REFERENCE_CONFIG), ["data.source=synthetic"])
    assert config["run_dir"] == "logs/finetune_test" and config["seed"] == 42 and config["precision"] == "bf16"
    assert config["data"]["image"]["max_size"] == 518 and config["data"]["num_workers"] == 0
    assert config["data"]["frames_per_gpu"] == 48 and config["data"]["num_frames"] == [2, 24]  # from the defaults
    assert config["data"]["image"]["color_jitter_prob"] == 0.9 and config["data"]["batches_per_epoch"] == 800
    optim = config["optim"]
    assert (optim["lr"], optim["weight_decay"], optim["accum_steps"]) == (1e-4, 0.05, 4)
    assert optim["max_steps"] == 20 * 800 and optim["warmup_steps"] == 800
    assert optim["min_lr_ratio"] == pytest.approx(1e-4) and optim["freeze"] == ["*aggregator*"]
    assert [group["params"] for group in optim["clip_groups"]] == [["*aggregator*"], ["*depth*"], ["*camera*"]]
    assert config["checkpoint"]["every"] == 5 * 800 and config["logging"]["log_every"] == 1
    assert config["model"]["heads"] == ["camera", "depth"]
    assert config["loss"]["camera"] == {"weight": 5.0, "loss_type": "l1"} and config["loss"]["point"] is None
    assert config["distributed"]["find_unused_parameters"] is False


def test_reference_config_is_refused_at_the_first_key_we_cannot_honour(tmp_path):
    text = REFERENCE_CONFIG.replace("      debug: True\n", "      debug: True\n      repeat_batch: True\n")
    with pytest.raises(ValueError, match=r"'data.train.common_config.repeat_batch' \(line 20\) cannot be honoured"):
        load_config(write_reference(tmp_path, text))
    text = REFERENCE_CONFIG.replace("_target_: torch.optim.AdamW", "_target_: torch.optim.SGD")
    with pytest.raises(ValueError, match=r"'optim.optimizer._target_' \(line \d+\) cannot be honoured"):
        load_config(write_reference(tmp_path, text))
