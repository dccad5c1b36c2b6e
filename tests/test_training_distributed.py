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


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, strategy):
    two_dir, one_dir = tmp_path / "two_processes", tmp_path / "one_process"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "training.train", "--config", str(TINY_TRAINING_CONFIG),
        *COMMON, f"run_dir={two_dir}", "data.frames_per_gpu=2", f"distributed.strategy={strategy}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    # One process, two samples per step: the same scenes and sample seeds as ranks 0 and 1 together.
    Trainer(load_config(TINY_TRAINING_CONFIG, [*COMMON, f"run_dir={one_dir}", "data.frames_per_gpu=4"])).train()

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
