"""What the benchmark scripts share: our memory probe loaded by path, and one measurement run in a fresh process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_probe() -> ModuleType:
    """vggt/models/memory_probe.py, loaded by path: in the reference's process `vggt` is the reference package."""
    spec = importlib.util.spec_from_file_location("memory_probe", REPO / "vggt" / "models" / "memory_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_child(
    script: Path, job: dict, reference: Path | None, reference_path: list[str]
) -> subprocess.CompletedProcess:
    """Run `script --child JOB` in a fresh interpreter: ours from this checkout, or the reference's checkout.

    The reference's runs start outside this repository, so that its `vggt` is not shadowed by ours.
    """
    env = dict(os.environ)
    if job["impl"] == "reference":
        env["PYTHONPATH"] = os.pathsep.join([str(reference), *reference_path])
        cwd = REPO.parent
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        cwd = REPO
    return subprocess.run(
        [sys.executable, str(script), "--child", json.dumps(job)],
        env=env,
        cwd=str(cwd),
        capture_output=True,
        text=True,
        check=False,
    )
