"""The hand-off commands of docs/reconstruct.md ("Train a splat or a NeRF from the folder"), as written.

`vggt reconstruct` runs with the tiny preset's random weights on rendered photos (flags for a fast CPU run are
appended). Random weights predict no usable cameras (COLMAP's triangulation has nothing to adjust), so the folder
is then rewritten from the rendered scene's exact depth and cameras, with the export options the same flags set;
the `colmap` commands run on it (Debian's COLMAP 3.8; skipped with a reason when absent);
gsplat and nerfstudio are not installed, so every file their commands make them read (by the flags given, as
tests/test_export_trainer.py describes their readers) is checked to exist.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import synthetic_reconstruction

from vggt.cli.main import build_parser, main
from vggt.cli.reconstruct import options_from_args

DOC = Path(__file__).resolve().parents[1] / "docs" / "reconstruct.md"
SECTION = "## Train a splat or a NeRF from the folder"
FAST = ["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--resolution", "112", "-q"]


def bash_blocks() -> list[list[list[str]]]:
    text = DOC.read_text()
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [[shlex.split(line) for line in block.splitlines() if line and not line.startswith("#")] for block in blocks]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def image_names(scene: Path) -> list[str]:
    return sorted(p.name for p in (scene / "images").iterdir())


def check_gsplat(command: list[str], cwd: Path) -> None:
    data = cwd / option(command, "--data_dir")
    factor = int(option(command, "--data_factor"))
    assert (data / "sparse" / "0" / "cameras.bin").is_file()
    assert sorted(p.name for p in (data / f"images_{factor}").iterdir()) == image_names(data)


def check_nerfstudio(command: list[str], cwd: Path) -> None:
    data = cwd / option(command, "--data")
    if data.suffix == ".json":  # nerfstudio dataparser: every file transforms.json names
        frames = json.loads(data.read_text())["frames"]
        for frame in frames:
            for key in ("file_path", "depth_file_path", "mask_path"):
                assert (data.parent / frame[key]).is_file(), frame[key]
        return
    assert (data / option(command, "--colmap-path") / "cameras.bin").is_file()
    factor = int(option(command, "--downscale-factor"))
    for folder in ("images", option(command, "--depths-path"), option(command, "--masks-path")):
        for name in image_names(data):
            path = data / f"{folder}_{factor}" / name
            assert (path if folder == "images" else path.with_suffix(".png")).is_file(), path


def run_colmap(command: list[str], cwd: Path) -> None:
    if shutil.which("colmap") is None:
        pytest.skip("Debian's colmap not installed (scripts/install_colmap.sh)")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{shlex.join(command)}: {result.stderr[-2000:]}"


def run_vggt(command: list[str], cwd: Path) -> None:
    """The command as written (plus FAST), then its output folder rewritten from the exact synthetic scene."""
    assert main(command[1:] + FAST) == 0, shlex.join(command)
    args = build_parser().parse_args(command[1:] + FAST)
    export = options_from_args(args).export_options(is_video=False)
    exact = synthetic_reconstruction(cwd / "rendered", num_frames=4, height=120, width=160, **vars(export))
    exact.save(cwd / args.out, overwrite=True)


def run_block(commands: list[list[str]], cwd: Path, monkeypatch) -> None:
    synthetic_reconstruction(cwd / "photos", num_frames=4, height=120, width=160)  # the photos
    monkeypatch.chdir(cwd)
    for command in commands:
        if command[0] == "vggt":
            run_vggt(command, cwd)
        elif command[0] == "python" and command[1].endswith("simple_trainer.py"):
            check_gsplat(command, cwd)
        elif command[0] == "ns-train":
            check_nerfstudio(command, cwd)
        elif command[0] == "colmap":
            run_colmap(command, cwd)
        else:
            pytest.fail(f"no check for the documented command {shlex.join(command)}")


def test_train_from_the_folder_commands(tmp_path, monkeypatch):
    blocks = bash_blocks()
    assert len(blocks) == 2 and [c[0] for c in blocks[0]].count("ns-train") == 2
    run_block(blocks[0], tmp_path, monkeypatch)


def test_colmap_triangulation_commands(tmp_path, monkeypatch):
    commands = bash_blocks()[1]
    assert "point_triangulator" in [c[1] for c in commands if c[0] == "colmap"]
    run_block(commands, tmp_path, monkeypatch)
