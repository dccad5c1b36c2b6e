"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG
from safetensors.torch import load_file

from training.distributed import seed_everything
from training.train import load_config
from training.trainer import Trainer, build_model
from training.validation import ValidationConfig, find_scene_dirs, validate

REPO = Path(__file__).resolve().parents[1]

STEPS = 3
# The per-sample recipe (its defaults: the config's reference-recipe section is replaced): only per-sample
# averaging makes a global batch split over ranks give the loss of one process (the reference's batch averaging
# and quantile filtering differ by about 1e-3 here).
PER_SAMPLE_LOSS = ["loss=null", "loss.averaging=per_sample"]
COMMON = [*SMALL_TRAINING_RUN, *PER_SAMPLE_LOSS, "optim.lr=1e-3", f"optim.max_steps={STEPS}"]
# Adam turns float-rounding differences of near-zero gradients into parameter differences well below
# one step's size (lr); a wrong gradient average or data split moves parameters by about lr per step.
PARAMETER_ATOL = 2e-4


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# Adapters on the trunk's attention and MLP layers, the camera head trained in full (FSDP shards both kinds).
LORA = ["lora.enabled=true", "lora.rank=4", "lora.train_fully=[camera_head.*]"]


@pytest.mark.parametrize(
    "strategy, extra",
    [("ddp", []), pytest.param("fsdp", [], marks=pytest.mark.slow), ("fsdp", LORA)],
    ids=["ddp", "fsdp", "fsdp_lora"],
)
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, strategy, extra):
    two_dir, one_dir = tmp_path / "two_processes", tmp_path / "one_process"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "training.train", "--config", str(TINY_TRAINING_CONFIG),
        *COMMON, *extra, f"run_dir={two_dir}", "data.frames_per_gpu=2", f"distributed.strategy={strategy}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    # One process, two samples per step: the same scenes and sample seeds as ranks 0 and 1 together.
    one_config = load_config(TINY_TRAINING_CONFIG, [*COMMON, *extra, f"run_dir={one_dir}", "data.frames_per_gpu=4"])
    Trainer(one_config).train()

    if strategy == "ddp":
        fingerprints = json.loads((two_dir / "replicas.json").read_text())["fingerprints"]
        assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert losses(two_dir) == pytest.approx(losses(one_dir), rel=1e-5)
    two = load_file(str(two_dir / "final" / "model.safetensors"))
    one = load_file(str(one_dir / "final" / "model.safetensors"))
    assert two.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=PARAMETER_ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    # The comparison is not vacuous: training moved the weights far more than the tolerance.
    seed_everything(0)
    initial = build_model(load_config(TINY_TRAINING_CONFIG, COMMON)["model"]).state_dict()
    moved = max((one[name] - initial[name]).abs().max().item() for name in one)
    assert moved > 10 * PARAMETER_ATOL
    if extra:  # LoRA: the adapters moved the layers they adapt (folded into final/), the trunk's others stayed
        trunk = [name for name in one if name.startswith("aggregator.")]
        adapted = max((two[name] - initial[name]).abs().max().item() for name in trunk if name.endswith("qkv.weight"))
        assert adapted > 10 * PARAMETER_ATOL
        assert all(torch.equal(two[name], initial[name]) for name in trunk if name.endswith("norm1.weight"))


# ------------------------------------------------------------------------------------------ resumption

# A constant learning rate (min_lr_ratio=1): a run stopped at max_steps=2 and resumed with max_steps=4 follows
# the same schedule as one run of 4 steps.
RESUME_RUN = [*SMALL_TRAINING_RUN, "optim.lr=1e-3", "optim.min_lr_ratio=1.0", "data.frames_per_gpu=2"]


def torchrun(run_dir: Path, *overrides: str, nodes: int = 1, resume: bool = False) -> None:
    """Train with 2 processes: one node of 2, or `nodes=2` "nodes" of 1 on 127.0.0.1 (c10d rendezvous)."""
    train = ["-m", "training.train", "--config", str(TINY_TRAINING_CONFIG), *RESUME_RUN, f"run_dir={run_dir}"]
    train += [*overrides, *(["--resume"] if resume else [])]
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc_per_node={2 // nodes}"]
    if nodes == 1:
        launcher += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    else:
        launcher += ["--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=vggt-test"]
    processes = [
        subprocess.Popen([*launcher, *train], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(nodes)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def assert_bitwise_equal(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resuming"


@pytest.fixture(scope="module")
def straight_ddp_run(tmp_path_factory) -> Path:
    """4 steps with 2 processes, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    torchrun(run_dir, "optim.max_steps=4")
    return run_dir


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_resume_exactly(tmp_path, strategy, straight_ddp_run):
    straight = straight_ddp_run
    if strategy == "fsdp":
        straight = tmp_path / "straight"
        torchrun(straight, "optim.max_steps=4", "distributed.strategy=fsdp")
    resumed = tmp_path / "resumed"
    torchrun(resumed, "optim.max_steps=2", f"distributed.strategy={strategy}")
    torchrun(resumed, "optim.max_steps=4", f"distributed.strategy={strategy}", resume=True)
    assert_bitwise_equal(final_weights(straight), final_weights(resumed))
    assert losses(resumed) == losses(straight)


def test_two_nodes_on_one_host_resume_exactly(tmp_path, straight_ddp_run):
    run_dir = tmp_path / "two_nodes"
    torchrun(run_dir, "optim.max_steps=2", nodes=2)
    torchrun(run_dir, "optim.max_steps=4", nodes=2, resume=True)
    assert_bitwise_equal(final_weights(straight_ddp_run), final_weights(run_dir))
    assert losses(run_dir) == losses(straight_ddp_run)


def test_two_process_checkpoint_resumes_on_one_process_with_the_same_global_batch(tmp_path, straight_ddp_run):
    from training.checkpoint import list_checkpoints

    steps = {step: directory for step, directory in list_checkpoints(straight_ddp_run)}
    config = load_config(TINY_TRAINING_CONFIG, [*RESUME_RUN, f"run_dir={tmp_path}", "optim.max_steps=5"])
    resumed = Trainer(config, resume=steps[4])
    assert resumed.step == 4 and resumed.accum_steps == 2  # 2 processes x 2 frames -> 1 process x 2 frames x 2
    assert_bitwise_equal(final_weights(straight_ddp_run), resumed.module.state_dict())
    resumed.train()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [5]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_validate_their_own_scenes_like_one_process(tmp_path, strategy):
    from vggt.data.synthetic import write_synthetic_dataset
    from vggt.models.vggt import VGGT

    # 3 scenes: rank 0 evaluates two, rank 1 one (under FSDP the ranks run different numbers of passes).
    write_synthetic_dataset(tmp_path / "held_out", 3, num_frames=2, height=56, width=70, seed=100)
    run_dir = tmp_path / "run"
    torchrun(
        run_dir, "optim.max_steps=1", f"distributed.strategy={strategy}", f"validation.scenes=[{tmp_path / 'held_out'}]"
    )
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {name: value for name, value in record.items() if name.startswith("val/")}
    assert sorted(logged) == ["val/camera_AUC@30", "val/depth_abs_rel"]

    # One process evaluating every scene with the trained weights gives the same metrics.
    config = ValidationConfig.from_dict({"scenes": [str(tmp_path / "held_out")]})
    model = VGGT.from_pretrained(run_dir / "final")
    expected = validate(model, find_scene_dirs(config.scenes), config, torch.device("cpu"), torch.float32)
    assert logged == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_fp16_under_fsdp_steps_like_ddp(tmp_path):
    """float16 autocast: FSDP's sharded gradient scaler (the ranks agree on overflows) gives DDP's run."""
    torchrun(tmp_path / "ddp", "optim.max_steps=2", "precision=fp16")
    torchrun(tmp_path / "fsdp", "optim.max_steps=2", "precision=fp16", "distributed.strategy=fsdp")
    assert_bitwise_equal(final_weights(tmp_path / "ddp"), final_weights(tmp_path / "fsdp"))
    assert losses(tmp_path / "fsdp") == losses(tmp_path / "ddp")


@pytest.mark.slow
def test_fsdp_shards_of_two_processes_load_into_one(tmp_path):
    from training.checkpoint import latest_checkpoint

    run_dir = tmp_path / "fsdp"
    torchrun(run_dir, "optim.max_steps=2", "distributed.strategy=fsdp", "checkpoint.plain_weights=false")
    config = load_config(TINY_TRAINING_CONFIG, [*RESUME_RUN, f"run_dir={tmp_path / 'one'}", "optim.max_steps=3"])
    resumed = Trainer(config, resume=latest_checkpoint(run_dir))
    assert resumed.step == 2 and resumed.accum_steps == 2
    assert_bitwise_equal(final_weights(run_dir), resumed.module.state_dict())
