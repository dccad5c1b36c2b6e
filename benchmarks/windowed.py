"""Windowed reconstruction against one forward pass: wall time and peak memory of `vggt.reconstruct`.

Each configuration runs in its own Python process (so that peak resident memory is its own), on the same folder
of synthetic photos, with the same random-weight model (timing and memory do not depend on the weights):

    python benchmarks/windowed.py --preset vggt-1b --frames 64 --size 224 --windows 0 16
    python benchmarks/windowed.py --preset tiny --frames 200 --windows 0 20 50     # quick

`--windows 0` is one forward pass over all frames. Prints a markdown table: frames, window, overlap, wall time,
peak RSS of the process (model included) and what it adds over the loaded model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import json, resource, sys, time
import torch
import vggt
from vggt.models import VGGTConfig, get_preset
from vggt.models.vggt import VGGT
args = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(args["threads"]) if args["threads"] else None
model = VGGT(get_preset(args["preset"])).eval()
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
window = args["window"] or None
rec = vggt.reconstruct(
    args["photos"], model=model, device="cpu", dtype="float32", resolution=args["size"], window=window,
    overlap=args["overlap"] if window else None, max_points=100_000, memory_check=False,
)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "model_mb": loaded, "summary": rec.summary()}))
"""


def write_photos(folder: Path, count: int, size: int) -> Path:
    """`count` random 4:3 photos (smooth noise, so they compress and decode like photos)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size * 3 // 4), Image.Resampling.BICUBIC).save(folder / f"{i:05d}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=224, help="model input width (multiple of 14)")
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 16], help="window sizes; 0 = one pass")
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vggt-bench-") as folder:
        photos = write_photos(Path(folder), args.frames, args.size)
        for window in args.windows:
            config = {**vars(args), "window": window, "photos": str(photos)}
            result = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True, check=True
            )
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append((window, measured))
            print(f"window {window or 'none'}: {measured}", file=sys.stderr)
    print(f"\n{args.preset}, {args.frames} frames, {args.size} px wide, CPU float32\n")
    print("| window | overlap | time (s) | peak RSS (MB) | added over the model (MB) |")
    print("|---|---|---|---|---|")
    for window, measured in rows:
        added = measured["peak_mb"] - measured["model_mb"]
        overlap = args.overlap if window else "-"
        print(
            f"| {window or 'all'} | {overlap} | {measured['seconds']:.1f} | {measured['peak_mb']:.0f} | {added:.0f} |"
        )


if __name__ == "__main__":
    main()
