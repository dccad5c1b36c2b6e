"""Optional integrations of a training run: Weights & Biases logging (offline) and pushing `final/` to a Hub."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG

from training.train import load_config
from training.trainer import Trainer

# The .wandb file: a 7-byte header (":W&B", magic, version), then LevelDB-log records in 32 KiB blocks, each a
# 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last) and a piece of a protobuf Record.
WANDB_FILE_HEADER = 7
LOG_BLOCK = 32768
RECORD_HEADER = 7
RECORD_ENDS = (1, 4)


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_config(run_dir: Path, *overrides: str) -> dict:
    return load_config(
        TINY_TRAINING_CONFIG, [*SMALL_TRAINING_RUN, "data.frames_per_gpu=2", f"run_dir={run_dir}", *overrides]
    )


def wandb_records(path: Path) -> Iterator:
    """The protobuf records of an offline run's .wandb file, read with wandb's own message classes."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = WANDB_FILE_HEADER, b""
    while position + RECORD_HEADER <= len(data):
        room = LOG_BLOCK - position % LOG_BLOCK
        if room < RECORD_HEADER:  # a block's tail too short for a header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + RECORD_HEADER])
        pending += data[position + RECORD_HEADER : position + RECORD_HEADER + length]
        position += RECORD_HEADER + length
        if kind in RECORD_ENDS:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_logs_every_step_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="logging.wandb needs the wandb extra (pip install 'vggt[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    Trainer(tiny_config(tmp_path, "optim.max_steps=2", "logging.wandb=true")).train()
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    records = list(wandb_records(run_file))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == (tmp_path / "wandb_run_id.txt").read_text().strip() and run.project == "vggt"
    logged = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            logged[record.history.step.num] = items
    expected = {r["step"]: r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())}
    assert sorted(logged) == sorted(expected) == [1, 2]
    for step, record in expected.items():
        assert logged[step]["loss"] == pytest.approx(record["loss"]) and logged[step]["lr"] == record["lr"]


def test_wandb_without_the_package_is_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ValueError, match=r"logging.wandb needs the wandb package: pip install 'vggt\[wandb\]'"):
        Trainer(tiny_config(tmp_path, "optim.max_steps=1", "logging.wandb=true")).train()
