"""Forward-pass memory and time of VGGT-1B on the CPU, ours against the public reference implementation.

Two jobs, each measured in a fresh process (so that the peak belongs to it alone), float32, VGGT-1B
with random weights (the same weights for both implementations):

- sweep: random 224 x 224 images, no track head, at each of `--frames` (default 8 and 24): the peak
  resident memory one forward pass adds on top of the loaded model, and memory per extra frame.
- kitchen: the first 4 photos of the kitchen example (preprocessed, crop mode: 350 x 518) with 5 query
  points, every head: forward memory and wall time.

    python benchmarks/memory.py                                    # ours only
    python benchmarks/memory.py --reference /tmp/vggt-reference    # side by side (a checkout of
        facebookresearch/vggt; `--reference-path DIR` adds e.g. where einops is installed)

The reference runs in its own interpreter with PYTHONPATH set to its checkout; it reads our random
weights from `--weights` (written once, 5 GB). Markdown tables go to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import memory_probe
from bench_common import run_child

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
KITCHEN = REPO.parent / "shared" / "data" / "examples" / "kitchen" / "images"
QUERY_POINTS = [[100.0, 100.0], [200.0, 150.0], [300.0, 200.0], [400.0, 250.0], [250.0, 300.0]]
SWEEP_SIZE = 224


def _load_model(impl: str, weights: str | None, track: bool):  # noqa: ANN202
    import torch

    from vggt.models.vggt import VGGT  # ours, or the reference's when its checkout is on PYTHONPATH

    torch.manual_seed(0)
    if impl == "ours":
        model = VGGT(enable_track=track)
    else:
        model = VGGT()
        if not track:
            model.track_head = None
    if weights is not None:
        from safetensors.torch import load_file

        state = load_file(weights)
        if not track:
            state = {k: v for k, v in state.items() if not k.startswith("track_head.")}
        model.load_state_dict(state, strict=True)
    return model.eval()


def _job_inputs(job: dict):  # noqa: ANN202
    import torch

    if job["name"] == "sweep":
        generator = torch.Generator().manual_seed(0)
        return torch.rand(1, job["frames"], 3, SWEEP_SIZE, SWEEP_SIZE, generator=generator), None
    from safetensors.torch import load_file

    inputs = load_file(job["inputs"])
    return inputs["images"][None], inputs["query_points"][None]


def child(job: dict) -> None:
    """Run one measurement and print it as JSON (in a fresh interpreter)."""
    import torch

    PeakMemory = memory_probe.PeakMemory
    if job.get("threads"):
        torch.set_num_threads(job["threads"])

    model = _load_model(job["impl"], job.get("weights"), job["track"])
    images, query_points = _job_inputs(job)
    with PeakMemory(torch.device("cpu")) as peak, torch.inference_mode():
        start, cpu_start = time.perf_counter(), time.process_time()
        model(images, query_points=query_points) if query_points is not None else model(images)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({"mb": peak.mb, "seconds": seconds, "cpu_seconds": cpu_seconds, "base_mb": peak.base_mb}))


def _run_child(job: dict, reference: Path | None, reference_path: list[str]) -> dict:
    result = run_child(Path(__file__).resolve(), job, reference, reference_path)
    if result.returncode != 0:
        raise RuntimeError(f"{job['impl']} {job['name']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _write_inputs(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from vggt.utils.load_fn import load_and_preprocess_images

    photos = sorted(p for p in KITCHEN.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:4]
    images = load_and_preprocess_images([str(p) for p in photos], mode="crop")
    save_file({"images": images.contiguous(), "query_points": torch.tensor(QUERY_POINTS)}, str(path))


def _write_weights(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from vggt.models.vggt import VGGT

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in VGGT().state_dict().items()}, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help="checkout of the public reference implementation")
    parser.add_argument("--reference-path", nargs="*", default=[], help="extra PYTHONPATH entries for it")
    parser.add_argument("--weights", type=Path, default=Path("/tmp/vggt1b_random_seed0.safetensors"))
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 24])
    parser.add_argument("--jobs", nargs="+", choices=["sweep", "kitchen"], default=["sweep", "kitchen"])
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per measurement (the least memory and the fastest are kept)"
    )
    parser.add_argument("--threads", type=int, help="torch threads in each run (1: robust to a shared machine)")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    sys.path.insert(0, str(REPO))
    impls = ["ours"] + (["reference"] if args.reference else [])
    weights = None
    if args.reference:
        if not args.weights.exists():
            _write_weights(args.weights)
        weights = str(args.weights)
    inputs = Path("/tmp") / "vggt_bench_kitchen4.safetensors"
    if "kitchen" in args.jobs:
        _write_inputs(inputs)

    def measure(job: dict) -> dict[str, dict]:
        out = {}
        for impl in impls:
            full_job = {**job, "impl": impl, "weights": weights, "threads": args.threads}
            runs = [_run_child(full_job, args.reference, args.reference_path) for _ in range(args.repeats)]
            out[impl] = {key: min(r[key] for r in runs) for key in ("mb", "seconds", "cpu_seconds")}
            out[impl]["median_mb"] = statistics.median(r["mb"] for r in runs)
            if args.repeats > 1:
                label = f"{job['name']} {job.get('frames', '')}".strip()
                print(f"# {impl} {label}: MB of each run " + ", ".join(f"{r['mb']:.0f}" for r in runs), flush=True)
        return out

    print(f"# load average before: {os.getloadavg()[0]:.2f}; torch threads per run: {args.threads or 'default'}")
    if "sweep" in args.jobs:
        results = {f: measure({"name": "sweep", "frames": f, "track": False}) for f in args.frames}
        _print_table(
            f"CPU float32, {SWEEP_SIZE}x{SWEEP_SIZE}, VGGT-1B random weights, no track head",
            impls,
            {f"{f} frames": r for f, r in results.items()},
        )
        if len(args.frames) > 1:
            f0, f1 = args.frames[0], args.frames[-1]
            for stat, key in (("least", "mb"), ("median", "median_mb"))[: 1 + (args.repeats > 1)]:
                slopes = {i: (results[f1][i][key] - results[f0][i][key]) / (f1 - f0) for i in impls}
                line = ", ".join(f"{i} {slopes[i]:.1f}" for i in impls)
                print(f"\nMB per extra frame ({stat} memory of {args.repeats} runs each): {line}")
    if "kitchen" in args.jobs:
        job = {"name": "kitchen", "inputs": str(inputs), "track": True}
        _print_table("4 kitchen photos (350x518) with 5 query points, every head", impls, {"kitchen": measure(job)})
    print(f"\n# load average after: {os.getloadavg()[0]:.2f}")


def _print_table(title: str, impls: list[str], rows: dict[str, dict[str, dict]]) -> None:
    print(f"\n{title}\n")
    header = "| job | " + " | ".join(f"{i} MB | {i} s | {i} CPU s" for i in impls)
    if "reference" in impls:
        header += " | memory ratio | time ratio | CPU time ratio"
    print(header + " |")
    print("|" + "---|" * (1 + 3 * len(impls) + (3 if "reference" in impls else 0)))
    for name, result in rows.items():
        cells = [f"{result[i]['mb']:.0f} | {result[i]['seconds']:.1f} | {result[i]['cpu_seconds']:.1f}" for i in impls]
        if "reference" in impls:
            ours, ref = result["ours"], result["reference"]
            ratios = [ours[k] / ref[k] for k in ("mb", "seconds", "cpu_seconds")]
            cells.append(" | ".join(f"{r:.2f}" for r in ratios))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
