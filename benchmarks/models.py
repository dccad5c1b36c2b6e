"""CPU time and peak memory of one forward pass of every model of the registry, on random weights.

    python benchmarks/models.py                          # the released architectures, 8 frames at 224 x 224
    python benchmarks/models.py --models pi3 pi3x --frames 4 --size 224 --threads 2

Each model runs in a fresh process (so that one model's memory does not count for the next): the model is built
with random weights of its released architecture (`create_model(name, pretrained=False)`), then one forward pass
is timed; peak memory is what the pass added on top of the loaded model (`benchmarks/memory_probe.py`'s `PeakMemory`).
Prints one JSON object per model, then a Markdown table (the one in docs/models.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(job: dict) -> dict:
    """Build `job["model"]` with random weights and time one forward pass of `job["frames"]` square frames."""
    import torch
    from memory_probe import PeakMemory

    from vggt.models.registry import create_model

    torch.set_num_threads(job["threads"])
    start = time.perf_counter()
    model = create_model(job["model"], pretrained=False)
    build_seconds = time.perf_counter() - start
    images = torch.rand(1, job["frames"], 3, job["size"], job["size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), PeakMemory(torch.device("cpu")) as peak:
        start = time.perf_counter()
        model(images)
        seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    return {**job, "parameters_m": round(parameters / 1e6, 1), "build_s": round(build_seconds, 1),
            "forward_s": round(seconds, 2), "peak_added_mb": round(peak.mb)}  # fmt: skip


def main() -> None:
    from vggt.models.registry import list_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list_models())
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="square image side in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    rows = []
    for name in args.models:
        job = {"model": name, "frames": args.frames, "size": args.size, "threads": args.threads}
        result = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True,
                                text=True, check=False, cwd=REPO)  # fmt: skip
        if result.returncode:
            print(f"{name}: failed\n{result.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| model | parameters (M) | forward, {args.frames} x {args.size} px (s) | peak memory added (MB) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| `{row['model']}` | {row['parameters_m']} | {row['forward_s']} | {row['peak_added_mb']} |")


if __name__ == "__main__":
    main()
