"""The training resolution a checkpoint records (VGGTConfig.train_resolution), and that evaluation and
reconstruction run models at it unless told otherwise."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG

from vggt.data.scene import load_scene, write_scene
from vggt.data.synthetic import generate_scene
from vggt.models.checkpoint import CONFIG_NAME
from vggt.models.vggt import VGGT

HEIGHT, WIDTH = 56, 70  # the size of configs/tiny_synthetic.yaml's samples


@pytest.fixture(scope="module")
def trained_at_70(tmp_path_factory) -> Path:
    """A tiny model saved with the training resolution the trainer records for tiny_synthetic.yaml."""
    torch.manual_seed(0)
    model = VGGT.from_preset("tiny")
    model.config = dataclasses.replace(model.config, train_resolution=WIDTH)
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_scene(root / "scene", generate_scene(2, HEIGHT, WIDTH, seed=2, name="scene"))
    return root


def test_trainer_records_the_training_resolution(tmp_path):
    from training.checkpoint import latest_checkpoint
    from training.train import load_config
    from training.trainer import Trainer

    overrides = [*SMALL_TRAINING_RUN, "data.frames_per_gpu=2", "optim.max_steps=1", f"run_dir={tmp_path}"]
    Trainer(load_config(TINY_TRAINING_CONFIG, overrides)).train()
    for folder in (tmp_path / "final", latest_checkpoint(tmp_path)):
        config = VGGT.from_pretrained(folder).config
        assert config.train_resolution == WIDTH and config.default_resolution == WIDTH and config.img_size == 518
    # Portrait samples (aspect > 1) of longest side 84: the resolution is the longest side, a multiple of 14.
    portrait = [*overrides, "data.image.max_size=90", "data.image.aspect_range=[1.5,1.5]", f"run_dir={tmp_path}/p"]
    Trainer(load_config(TINY_TRAINING_CONFIG, portrait)).train()
    assert VGGT.from_pretrained(tmp_path / "p" / "final").config.train_resolution == 84


def test_config_json_without_a_training_resolution_still_loads(trained_at_70, tmp_path):
    config = json.loads((trained_at_70 / CONFIG_NAME).read_text())
    assert config["train_resolution"] == WIDTH
    del config["train_resolution"]
    old = tmp_path / "old"
    old.mkdir()
    (old / CONFIG_NAME).write_text(json.dumps(config))
    (old / "model.safetensors").write_bytes((trained_at_70 / "model.safetensors").read_bytes())
    loaded = VGGT.from_pretrained(old).config
    assert loaded.train_resolution is None and loaded.default_resolution == loaded.img_size == 518
    with pytest.raises(ValueError, match="train_resolution"):
        dataclasses.replace(loaded, train_resolution=0)


def test_evaluation_runs_at_the_training_resolution(trained_at_70, photos):
    from vggt.eval.runner import EvalSettings, evaluate_scenes, predict

    model = VGGT.from_pretrained(trained_at_70)
    scene = load_scene(photos / "scene", load_data=False)
    assert predict(model, scene.image_paths, EvalSettings()).input_hw == (HEIGHT, WIDTH)
    assert predict(model, scene.image_paths, EvalSettings(resolution=140)).input_hw == (112, 140)
    report = evaluate_scenes(model, [photos / "scene"], EvalSettings(), progress=False)
    assert report["settings"]["resolution"] == WIDTH
    plain = VGGT.from_preset("tiny")
    assert predict(plain, scene.image_paths, EvalSettings()).input_hw == (420, 518)  # img_size without a record


def test_evaluate_command_runs_at_the_training_resolution(trained_at_70, photos, tmp_path):
    from vggt.cli.main import main

    args = ["evaluate", "--data", str(photos), "--checkpoint", str(trained_at_70), "-q", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["settings"]["resolution"] == WIDTH
    assert main([*args, "--out", str(tmp_path / "b"), "--resolution", "140"]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["settings"]["resolution"] == 140


def test_reconstruct_runs_at_the_training_resolution(trained_at_70, photos):
    import vggt

    images = photos / "scene" / "images"
    options = {"device": "cpu", "dtype": "float32", "memory_check": False}
    from_checkpoint = vggt.reconstruct(images, checkpoint=str(trained_at_70), **options)
    assert from_checkpoint.predictions.input_hw == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(from_checkpoint.cameras.image_wh, [[WIDTH, HEIGHT]] * 2)
    given = vggt.reconstruct(images, model=VGGT.from_pretrained(trained_at_70), **options)
    assert given.predictions.input_hw == (HEIGHT, WIDTH)
    told = vggt.reconstruct(images, checkpoint=str(trained_at_70), resolution=140, **options)
    assert told.predictions.input_hw == (112, 140)
