"""Optional integrations of a training run: Weights & Biases logging (offline) and pushing `final/` to a Hub.

The Hub push runs huggingface_hub's real client against a local endpoint (no network) that keeps each commit as
a Hub cache folder, which huggingface_hub's `snapshot_download(local_files_only=True)` then reads back."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import SMALL_TRAINING_RUN, TINY_TRAINING_CONFIG

from training.hub import push_model_folder
from training.train import load_config
from training.trainer import Trainer

# The .wandb file: a 7-byte header (":W&B", magic, version), then LevelDB-log records in 32 KiB blocks, each a
# 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last) and a piece of a protobuf Record.
WANDB_FILE_HEADER = 7
LOG_BLOCK = 32768
RECORD_HEADER = 7
RECORD_ENDS = (1, 4)


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


class LocalHub(BaseHTTPRequestHandler):
    """The three calls of huggingface_hub's `create_repo` and `upload_folder` (files sent inline, base64), each
    commit stored as a Hub cache folder: <cache>/models--<owner>--<name>/snapshots/<commit>/, refs/main."""

    cache: Path

    def log_message(self, *args) -> None:
        pass

    def _reply(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/api/repos/create":
            request = json.loads(body)
            return self._reply({"url": f"{base}/{request['organization']}/{request['name']}"})
        _, _, _, owner, name, action, _revision = self.path.split("/")
        if action == "preupload":
            files = json.loads(body)["files"]
            reply = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return self._reply({"files": reply})
        lines = [json.loads(line) for line in body.decode().splitlines()]
        commit = hashlib.sha1(body).hexdigest()
        repo = self.cache / f"models--{owner}--{name}"
        for line in lines:
            if line["key"] == "file":
                path = repo / "snapshots" / commit / line["value"]["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(base64.b64decode(line["value"]["content"]))
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        self._reply({"commitUrl": f"{base}/{owner}/{name}/commit/{commit}", "commitOid": commit})


def test_final_model_is_pushed_to_the_hub(tmp_path, monkeypatch):
    from huggingface_hub import snapshot_download

    from vggt.models.vggt import VGGT

    LocalHub.cache = tmp_path / "hub_cache"
    server = ThreadingHTTPServer(("127.0.0.1", 0), LocalHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    endpoint = f"http://127.0.0.1:{server.server_port}"
    run_dir = tmp_path / "run"
    try:
        Trainer(
            tiny_config(run_dir, "optim.max_steps=1", "hub.repo_id=lab/vggt-tiny", f"hub.endpoint={endpoint}")
        ).train()
    finally:
        server.shutdown()
        server.server_close()  # nothing listens there any more
    pushed = snapshot_download("lab/vggt-tiny", cache_dir=LocalHub.cache, local_files_only=True)
    expected, actual = VGGT.from_pretrained(run_dir / "final").state_dict(), VGGT.from_pretrained(pushed).state_dict()
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)

    with pytest.raises(ValueError, match=r"hub.repo_id: pushing .* to lab/vggt-tiny failed .*`hf upload lab/vggt-tiny"):
        push_model_folder(run_dir / "final", {"repo_id": "lab/vggt-tiny", "endpoint": endpoint}, "again")  # closed
    with pytest.raises(ValueError, match="hub.repo_id 'not a/valid id' is not a Hub model id"):
        Trainer(tiny_config(tmp_path / "bad", "hub.repo_id=not a/valid id"))
