"""Sequence-parallel reconstruction (vggt.pipeline.parallel): `processes=2` from Python, and a real
`torchrun --nproc_per_node=2 -m vggt reconstruct` (gloo on 127.0.0.1), each equal to one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vggt
from vggt.export.ply import read_ply

pytest.importorskip("pycolmap")

RESOLUTION = 112
# Every pixel in the cloud, so that both runs pick the same pixels and the points can be compared one by one.
ALL_PIXELS = {"conf_percentile": 0, "max_points": None}
ATOL = 1e-4


@pytest.fixture(scope="module")
def photos(examples_dir) -> list[Path]:
    return sorted((examples_dir / "kitchen" / "images").iterdir())[:5]


def test_two_local_processes_reconstruct_as_one(golden_model, photos):
    options = {"device": "cpu", "dtype": "float32", "resolution": RESOLUTION, **ALL_PIXELS}
    one = vggt.reconstruct(photos, model=golden_model, **options)
    two = vggt.reconstruct(photos, model=golden_model, processes=2, **options)
    np.testing.assert_allclose(two.extrinsics, one.extrinsics, atol=ATOL)
    np.testing.assert_allclose(two.intrinsics, one.intrinsics, rtol=ATOL)
    np.testing.assert_allclose(two.depth, one.depth, atol=ATOL, rtol=ATOL)
    np.testing.assert_allclose(two.points, one.points, atol=ATOL, rtol=ATOL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_writes_what_one_process_writes(photos, golden_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in photos:
        (folder / path.name).symlink_to(path)
    args = ["reconstruct", str(folder), "--checkpoint", str(golden_dir / "tiny_state_dict.safetensors")]
    args += ["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--resolution", str(RESOLUTION)]
    args += ["--conf-percentile", "0", "--max-points", str(10**9)]
    single = subprocess.run([sys.executable, "-m", "vggt", *args, "--out", "one"], cwd=tmp_path, capture_output=True)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
    torchrun += [f"--master_port={_free_port()}", "-m", "vggt"]
    parallel = subprocess.run([*torchrun, *args, "--out", "two"], cwd=tmp_path, capture_output=True, text=True)
    assert parallel.returncode == 0, parallel.stderr
    assert parallel.stdout.count("vggt reconstruct: 5 frames") == 1  # rank 0 writes and reports; rank 1 computes

    one, two = tmp_path / "one", tmp_path / "two"
    cameras_one = json.loads((one / "cameras.json").read_text())["images"]
    cameras_two = json.loads((two / "cameras.json").read_text())["images"]
    for a, b in zip(cameras_one, cameras_two, strict=True):
        assert a["file_name"] == b["file_name"]
        np.testing.assert_allclose(b["extrinsic"], a["extrinsic"], atol=ATOL)
        np.testing.assert_allclose(b["intrinsic"], a["intrinsic"], rtol=ATOL)
        np.testing.assert_allclose(np.load(two / b["depth_file"]), np.load(one / a["depth_file"]), atol=ATOL, rtol=ATOL)
    (points_one, _), (points_two, _) = read_ply(one / "points.ply"), read_ply(two / "points.ply")
    np.testing.assert_allclose(points_two, points_one, atol=ATOL, rtol=ATOL)
