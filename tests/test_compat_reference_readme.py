"""The reference README's Python snippets (../shared/reference/scripts/README.reference.md) run unchanged but for
the image paths, on CPU: `facebook/VGGT-1B` resolves through a huggingface_hub cache this test builds (holding the
tiny golden weights and their config.json, as a cached snapshot would), and a sitecustomize.py on PYTHONPATH answers
the snippets' unconditional `torch.cuda.get_device_capability()` call."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SITECUSTOMIZE = "import torch\n\ntorch.cuda.get_device_capability = lambda device=None: (8, 0)\n"


def test_reference_readme_snippets_run_unchanged(tmp_path, shared_dir, golden_dir, examples_dir):
    from vggt.models.vggt import VGGT

    readme = shared_dir / "reference" / "scripts" / "README.reference.md"
    if not readme.is_file():
        pytest.skip(f"{readme} is absent")
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    quick_start = next(b for b in blocks if "VGGT.from_pretrained" in b)
    heads = next(b for b in blocks if "model.aggregator(images)" in b)

    snapshot = tmp_path / "hub" / "models--facebook--VGGT-1B" / "snapshots" / COMMIT
    VGGT.from_pretrained(golden_dir / "tiny_state_dict.safetensors", preset="tiny").save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)

    photos = sorted(str(p) for p in (examples_dir / "room" / "images").iterdir())[:3]
    code = quick_start.replace('["path/to/imageA.png", "path/to/imageB.png", "path/to/imageC.png"]', repr(photos))
    assert code != quick_start, "the reference README's image list changed"
    code += heads + (
        "\nassert predictions['depth'].shape[:2] == (1, 3)\n"
        "assert point_map_by_unprojection.shape == depth_map.shape[1:-1] + (3,)\n"
        "assert track_list[-1].shape == (1, 3, 2, 2) and extrinsic.shape == (1, 3, 3, 4)\n"
        "print('ok')\n"
    )
    worktree = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(worktree)]),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "CUDA_VISIBLE_DEVICES": "",
    }
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"reference README snippets failed:\n{result.stderr[-3000:]}")
    assert result.stdout.strip().endswith("ok")
