"""The README's notebook example (the reference package's example) runs unchanged but for image paths.

`facebook/VGGT-1B` resolves through a huggingface_hub cache this test builds (holding the tiny
golden weights), in a subprocess with HF_HUB_OFFLINE=1, exactly as a cached snapshot would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {section}")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_readme_notebook_example_runs(tmp_path, golden_dir, examples_dir):
    from vggt.models.vggt import VGGT

    model = VGGT.from_pretrained(golden_dir / "tiny_state_dict.safetensors", preset="tiny")
    snapshot = tmp_path / "hub" / "models--facebook--VGGT-1B" / "snapshots" / COMMIT
    model.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)

    blocks = _python_blocks("Notebook quick start")
    assert len(blocks) == 2, "the README's quick start should have the one-shot and the head-by-head examples"
    photos = sorted(str(p) for p in (examples_dir / "room" / "images").iterdir())[:3]
    code = "\n".join(blocks).replace('["path/to/imageA.png", "path/to/imageB.png", "path/to/imageC.png"]', repr(photos))
    code += (
        "\nassert predictions['depth'].shape[:2] == (1, 3)\n"
        "assert points.shape == depth_map.shape[1:-1] + (3,)\n"
        "assert track_list[-1].shape == (1, 3, 2, 2)\n"
        "print('ok', tuple(predictions['world_points'].shape))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"README example failed:\n{result.stderr[-3000:]}")
    assert result.stdout.strip().startswith("ok (1, 3, ")
