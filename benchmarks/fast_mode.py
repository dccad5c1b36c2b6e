"""Fast mode (token merging in the global blocks) against the exact model: time, memory and how far the outputs move.

Each configuration runs in its own Python process (so that peak resident memory is its own) on the same frames
with the same model, without the track head:

    python benchmarks/fast_mode.py --preset vggt-1b --size 224 --frames 16 32 --ratios 0 0.3 0.5
    python benchmarks/fast_mode.py --preset tiny --frames 16 64 --ratios 0 0.5          # quick
    python benchmarks/fast_mode.py --device cuda --dtype bf16 --size 518 --frames 100 200 --ratios 0 0.5

Frames are the real photos of ../shared/data/examples (cycled when more are asked for), or smooth noise where
that folder is absent. With `--checkpoint` the model loads those weights; otherwise its weights are random, and
the deviation columns then only say how much merging perturbs *this* network: what it costs in accuracy with
the released weights must be measured with them (`vggt evaluate --merge-ratio`). Prints a markdown table:
frames, ratio, wall time of the forward pass, peak memory, the median relative depth difference, the median depth
difference over the exact depth map's spread (std over pixels: random weights predict a nearly flat depth) and
the median camera rotation difference (degrees) from the exact pass (ratio 0).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "data" / "examples"

CHILD = """
import json, resource, sys, time
import numpy as np
import torch
from vggt.models import get_preset
from vggt.runtime.engine import StreamingEngine
from vggt.models.vggt import VGGT
from vggt.utils.device import autocast, resolve_device, resolve_dtype
args = json.loads(sys.argv[1])
torch.manual_seed(0)
if args["threads"]:
    torch.set_num_threads(args["threads"])
device = resolve_device(args["device"])
if args["checkpoint"]:
    model = VGGT.from_pretrained(args["checkpoint"])
else:
    model = VGGT(get_preset(args["preset"]))
model = model.eval().to(device)
images = torch.from_numpy(np.load(args["frames"])).to(device)
engine = StreamingEngine.auto(device, merge_ratio=args["ratio"])
with torch.inference_mode(), autocast(device, resolve_dtype(device, args["dtype"])):
    model(images[:2], heads=("camera", "depth"), engine=engine)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = model(images, heads=("camera", "depth"), engine=engine)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
if device.type == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
np.savez(args["result"], depth=out["depth"].float().cpu().numpy(), pose_enc=out["pose_enc"].float().cpu().numpy())
print(json.dumps({"seconds": seconds, "peak_mb": peak}))
"""


def frames_array(count: int, size: int) -> np.ndarray:
    """[count, 3, size, size] float32 in [0, 1]: the example photos (cycled), or smooth noise without them."""
    photos = sorted(EXAMPLES.glob("*/images/*.png")) if EXAMPLES.is_dir() else []
    if photos:
        from vggt.utils.load_fn import load_and_preprocess_images_square

        images, _ = load_and_preprocess_images_square([photos[i % len(photos)] for i in range(count)], size)
        return images.numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((count, 3, 12, 12), dtype=np.float32))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1).numpy()


def rotation_difference_deg(pose_a: np.ndarray, pose_b: np.ndarray) -> np.ndarray:
    """Per-frame angle (degrees) between the rotations of two pose encodings [..., 9] (quaternion at 3:7)."""
    qa = pose_a[..., 3:7] / np.linalg.norm(pose_a[..., 3:7], axis=-1, keepdims=True)
    qb = pose_b[..., 3:7] / np.linalg.norm(pose_b[..., 3:7], axis=-1, keepdims=True)
    cosine = np.clip(np.abs((qa * qb).sum(-1)), 0.0, 1.0)
    return np.degrees(2 * np.arccos(cosine)).reshape(-1)


def deviation(result: dict, exact: dict) -> tuple[float, float]:
    """Median relative depth difference, median depth difference over the exact depth's spread (std over pixels), and
    median rotation difference (degrees), from the exact outputs."""
    depth, reference = result["depth"], exact["depth"]
    difference = np.abs(depth - reference)
    relative = difference / np.maximum(np.abs(reference), 1e-6)
    # Random weights predict a nearly constant depth, so the difference is also given against the spread of the
    # exact depth over pixels (a change of the depth map's pattern, not of its level).
    spread = max(float(reference.std()), 1e-12)
    angle = float(np.median(rotation_difference_deg(result["pose_enc"], exact["pose_enc"])))
    return float(np.median(relative)), float(np.median(difference)) / spread, angle


def run_one(config: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True)
    if result.returncode != 0:
        failed = f"{config['frames_count']} frames, ratio {config['ratio']}"
        raise SystemExit(f"run with {failed} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--checkpoint", default=None, help="weights to load (Hub id or folder); default random")
    parser.add_argument("--size", type=int, default=224, help="square input side (multiple of 14)")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.3, 0.5])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32, bf16 or fp16 (autocast)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    ratios = sorted(set([0.0, *args.ratios]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="vggt-fast-") as folder:
        for count in args.frames:
            frames = Path(folder) / f"frames_{count}.npy"
            np.save(frames, frames_array(count, args.size))
            outputs = {}
            for ratio in ratios:
                result = Path(folder) / f"out_{count}_{ratio}.npz"
                config = {**vars(args), "frames": str(frames), "frames_count": count, "ratio": ratio}
                measured = run_one({**config, "result": str(result)})
                outputs[ratio] = dict(np.load(result))
                rows.append((count, ratio, measured, *deviation(outputs[ratio], outputs[0.0])))
                print(f"{count} frames, ratio {ratio}: {measured}", file=sys.stderr)
    weights = args.checkpoint or "random weights"
    memory = "peak CUDA allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"\n{args.preset} ({weights}), {args.size}x{args.size}, {args.device} {args.dtype}\n")
    print(
        f"| frames | merge ratio | forward (s) | speed-up | {memory} (MB) | depth rel. diff "
        "| depth diff / depth spread | rotation diff (deg) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    exact_seconds = {count: m["seconds"] for count, ratio, m, *_ in rows if ratio == 0.0}
    for count, ratio, measured, depth_diff, depth_vs_spread, angle in rows:
        speedup = exact_seconds[count] / measured["seconds"]
        print(
            f"| {count} | {ratio:g} | {measured['seconds']:.1f} | {speedup:.2f}x | {measured['peak_mb']:.0f} "
            f"| {depth_diff:.2e} | {depth_vs_spread:.3f} | {angle:.3f} |"
        )


if __name__ == "__main__":
    main()
