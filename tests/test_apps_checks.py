"""What `vggt demo` and `vggt view` check before a model loads (vggt.apps.checks), as functions and as one-line
command errors."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, app_environment

from vggt.apps.checks import check_listen_address, example_scenes, require_modules
from vggt.errors import DependencyError, InputError


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_listen_address(busy_port):
    assert check_listen_address("127.0.0.1", 0) > 0  # port 0: a free one
    with pytest.raises(InputError, match=f"port {busy_port} is already in use on 127.0.0.1"):
        check_listen_address("127.0.0.1", busy_port)
    with pytest.raises(InputError, match="port must be in 0..65535"):
        check_listen_address("127.0.0.1", 70000)
    with pytest.raises(InputError, match="host 'no-such-host.invalid' is not an address"):
        check_listen_address("no-such-host.invalid", 8000)


def test_example_scenes(examples_dir, tmp_path):
    scenes = example_scenes(examples_dir)
    assert "room" in scenes and len(scenes["room"]) == 8  # photos in room/images/
    assert all(path.is_file() for paths in scenes.values() for path in paths)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no subfolder with images"):
        example_scenes(tmp_path)
    with pytest.raises(InputError, match="is not a folder"):
        example_scenes(tmp_path / "absent")


def test_missing_module_names_the_extra():
    with pytest.raises(DependencyError, match=r"vggt demo needs no_such_module: pip install 'vggt\[demo\]'"):
        require_modules("vggt demo", "json", "no_such_module")


def run_command(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vggt", *args]
    env = app_environment(tmp_path)
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)


def test_demo_checks_come_before_the_model(busy_port, tmp_path):
    """A missing checkpoint would be reported if the model loaded first: each line names the flag instead."""
    absent = ["--checkpoint", str(tmp_path / "absent.safetensors")]
    cases = [
        (["--port", str(busy_port)], f"vggt demo: error: --port {busy_port} is already in use on 127.0.0.1"),
        (
            ["--port", "0", "--examples", str(tmp_path / "nope")],
            f"vggt demo: error: --examples {tmp_path / 'nope'} is not a folder",
        ),
        (
            ["--port", "0", "--host", "no-such-host.invalid"],
            "vggt demo: error: --host 'no-such-host.invalid' is not an",
        ),
    ]
    for args, expected in cases:
        result = run_command(["demo", *absent, *args], tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    result = run_command(["demo", *absent, "--resolution", "100", "--port", "0"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "vggt demo: error: --resolution must be a positive multiple of the patch size 14, got 100"
    ]
