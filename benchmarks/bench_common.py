"""What the benchmark scripts share: one measurement run in a fresh process (the probe is memory_probe.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
