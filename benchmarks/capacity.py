"""How many frames fit: peak memory and speed as the frame count doubles, per resolution.

For each `--sizes` entry, frame counts double from `--start-frames` up to `--max-frames`, until a run
runs out of memory or the next run is projected to exceed `--time-budget` seconds in total. Every
run is a fresh process (VGGT-1B by default, random weights: memory and time do not depend on them).
Columns: peak memory in total (weights included) and minus the weights, MB per extra frame (slope
from the previous row), seconds and frames per second. `--reference PATH` runs the public reference
implementation (a checkout of facebookresearch/vggt, in its own interpreter) on the same rows.

    python benchmarks/capacity.py --device cpu --sizes 224x224 --max-frames 16
    python benchmarks/capacity.py --device cuda --dtype bf16 --offload --sizes 518x518 --max-frames 4096
    python benchmarks/capacity.py --device cpu --max-frames 8 --reference /tmp/vggt-reference --reference-path /tmp/deps

Markdown goes to stdout (and `--json FILE` keeps the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import memory_probe
from bench_common import run_child

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MIB = 1024**2
HEADS = ("camera", "depth", "point")


def child(job: dict) -> None:
    """One run, printed as JSON: weights MB, peak MB (total and added by the forward), seconds."""
    import torch

    from vggt.models.vggt import VGGT

    probe = memory_probe
    device = torch.device(job["device"])
    torch.manual_seed(0)
    if job["impl"] == "ours":
        model = VGGT.from_preset(job["preset"], enable_track=False)
    else:
        model = VGGT()
        model.track_head = None
    model = model.to(device).eval()
    if job["trunk_bf16"]:
        model.aggregator.to(torch.bfloat16)
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / MIB
    height, width = job["size"]
    images = torch.rand(1, job["frames"], 3, height, width, device="cpu" if job["offload"] else device)
    kwargs = {}
    if job["impl"] == "ours":
        from vggt.runtime.engine import StreamingEngine

        kwargs["engine"] = StreamingEngine.auto(device, offload=job["offload"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=job["dtype"] == "bf16")
    try:
        with probe.PeakMemory(device) as peak, torch.inference_mode(), autocast:
            start = time.perf_counter()
            model(images, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
    except torch.cuda.OutOfMemoryError:
        print(json.dumps({"oom": True}))
        return
    total = peak.base_mb + peak.mb if device.type == "cpu" else torch.cuda.max_memory_allocated(device) / MIB
    print(json.dumps({"weights_mb": weights_mb, "added_mb": peak.mb, "total_mb": total, "seconds": seconds}))


def _run(job: dict, reference: Path | None, reference_path: list[str]) -> dict:
    result = run_child(Path(__file__).resolve(), job, reference, reference_path)
    lines = result.stdout.strip().splitlines()
    if result.returncode in (-9, 137) or "OutOfMemoryError" in result.stderr or "out of memory" in result.stderr:
        return {"oom": True}
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{job['impl']} run failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def sweep(args: argparse.Namespace, impl: str, size: tuple[int, int]) -> list[dict]:
    """Rows for one implementation and size: frames doubling until OOM, the limit or the time budget."""
    rows: list[dict] = []
    frames, spent = args.start_frames, 0.0
    while frames <= args.max_frames:
        if rows and "seconds" in rows[-1]:
            # Global attention is quadratic in the frames: a run of twice the frames takes up to 4x as long.
            projected = 4 * rows[-1]["seconds"]
            if spent + projected > args.time_budget:
                rows.append({"frames": frames, "skipped": f"projected {projected:.0f} s exceeds the time budget"})
                break
        job = {
            "impl": impl,
            "preset": args.preset,
            "device": args.device,
            "dtype": args.dtype,
            "trunk_bf16": args.trunk_bf16,
            "offload": args.offload,
            "size": size,
            "frames": frames,
        }
        start = time.perf_counter()
        row = {"frames": frames, **_run(job, args.reference, args.reference_path)}
        spent += time.perf_counter() - start
        rows.append(row)
        print(f"# {impl} {size[0]}x{size[1]} {frames} frames: {row}", file=sys.stderr, flush=True)
        if row.get("oom"):
            break
        frames *= 2
    return rows


def _cells(rows: list[dict], index: int) -> list[str]:
    row = rows[index]
    if row.get("oom"):
        return ["out of memory"] + [""] * 4
    if "skipped" in row:
        return [row["skipped"]] + [""] * 4
    previous = rows[index - 1] if index > 0 and "added_mb" in rows[index - 1] else None
    slope = (row["added_mb"] - previous["added_mb"]) / (row["frames"] - previous["frames"]) if previous else None
    return [
        f"{row['total_mb']:.0f}",
        f"{row['total_mb'] - row['weights_mb']:.0f}",
        "" if slope is None else f"{slope:.1f}",
        f"{row['seconds']:.1f}",
        f"{row['frames'] / row['seconds']:.2f}",
    ]


def markdown(size: tuple[int, int], results: dict[str, list[dict]]) -> str:
    impls = list(results)
    columns = ["peak MB", "minus weights MB", "MB per extra frame", "s", "frames/s"]
    header = ["frames"] + [f"{impl} {c}" for impl in impls for c in columns]
    if "reference" in results:
        header.append("peak ratio (ours / reference)")
    lines = [f"### {size[0]}x{size[1]}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(results[impls[0]]):
        cells = [str(row["frames"])]
        ratio = ""
        for impl in impls:
            rows = results[impl]
            cells += _cells(rows, i) if i < len(rows) else [""] * len(columns)
        if "reference" in results and i < len(results["reference"]):
            ours, ref = results["ours"][i], results["reference"][i]
            if "total_mb" in ours and "total_mb" in ref:
                ratio = f"{ours['total_mb'] / ref['total_mb']:.2f}"
        if "reference" in results:
            cells.append(ratio)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def projection(args: argparse.Namespace, size: tuple[int, int]) -> str:
    """The memory model's figures (vggt/runtime/memory_model.py) for the rows `sweep` would run: no run."""
    import torch

    from vggt.models.config import get_preset
    from vggt.models.vggt import VGGT
    from vggt.runtime.memory_model import GIB, estimate_streaming_memory
    from vggt.runtime.options import StreamingOptions

    config = get_preset(args.preset)
    with torch.device("meta"):
        model = VGGT(config)
    params = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("track_head."))
    trunk = sum(p.numel() for p in model.aggregator.parameters())
    options = StreamingOptions.auto(args.device, offload=args.offload)
    mode = "bf16 trunk weights" if args.trunk_bf16 else args.dtype
    lines = [
        f"### {size[0]}x{size[1]}: projected by the memory model ({args.device}, {mode}, offload={args.offload})",
        "",
        "| frames | device peak GiB | weights GiB | trunk phase GiB | heads phase GiB | host GiB |",
        "|---|---|---|---|---|---|",
    ]
    frames = args.start_frames
    while frames <= args.max_frames:
        estimate = estimate_streaming_memory(
            config,
            frames,
            *size,
            options,
            num_parameters=params,
            trunk_parameters=trunk,
            trunk_bytes=2 if args.trunk_bf16 else 4,
            autocast_bytes=2 if args.dtype == "bf16" and not args.trunk_bf16 else None,
            images_on_device=not args.offload,
            discards_read_frames=args.device == "cpu",
        )
        weights, peak = estimate.weights, estimate.device_peak
        lines.append(
            f"| {frames} | {peak / GIB:.1f} | {weights / GIB:.1f} | {estimate.trunk_phase / GIB:.1f} | "
            f"{estimate.heads_phase / GIB:.1f} | {estimate.host / GIB:.1f} |"
        )
        frames *= 2
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast")
    parser.add_argument("--trunk-bf16", action="store_true", help="cast the aggregator's weights to bf16")
    parser.add_argument("--offload", action="store_true", help="StreamingOptions(offload=True); images on the CPU")
    parser.add_argument("--sizes", nargs="+", default=["224x224"])
    parser.add_argument("--start-frames", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--time-budget", type=float, default=float("inf"), help="seconds per implementation and size")
    parser.add_argument("--reference", type=Path, help="checkout of the public reference implementation")
    parser.add_argument("--reference-path", nargs="*", default=[], help="extra PYTHONPATH entries for it")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--project", action="store_true", help="print the memory model's projection, run nothing")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.project:
        sys.path.insert(0, str(REPO))
        for text in args.sizes:
            print("\n" + projection(args, tuple(int(v) for v in text.lower().split("x"))))
        return
    impls = ["ours"] + (["reference"] if args.reference else [])
    everything = {}
    print(f"# device={args.device} dtype={args.dtype} offload={args.offload} load average {os.getloadavg()[0]:.2f}")
    for text in args.sizes:
        size = tuple(int(v) for v in text.lower().split("x"))
        results = {impl: sweep(args, impl, size) for impl in impls}
        everything[text] = results
        print("\n" + markdown(size, results), flush=True)
    print(f"\n# load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
