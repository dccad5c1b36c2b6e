"""Inference wall time and peak memory over frame counts and resolutions.

Random weights are fine for timing. Examples:

    python benchmarks/inference.py                       # vggt-1b on the best device, default sweep
    python benchmarks/inference.py --preset tiny --frames 1 4 16 --sizes 518x518 294x518
    python benchmarks/inference.py --device cuda --dtype bf16 --frames 1 8 32 64

Peak memory is what one forward pass adds on top of the loaded model: CUDA's max_memory_allocated
on a GPU; on a Linux CPU, the peak resident set (VmHWM, reset through /proc/self/clear_refs before
each run) minus the resident set before it. "memory added per frame" is the slope of peak memory
against frames. `--keep-all-layers` keeps all aggregator outputs alive, as the reference does, to
show what keeping only the layers the heads read saves.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
from memory_probe import PeakMemory

from vggt.models.vggt import VGGT
from vggt.runtime.engine import StreamingEngine
from vggt.utils.device import autocast, resolve_device, resolve_dtype


def _parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(
    model: VGGT,
    frames: int,
    size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    engine: StreamingEngine | None = None,
) -> tuple[float, float]:
    """Median seconds per forward and peak memory in MB for one configuration."""
    images = torch.rand(1, frames, 3, *size, device=device)
    gc.collect()
    times = []
    with PeakMemory(device) as probe, torch.inference_mode(), autocast(device, dtype):
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            model(images, engine=engine)
            _sync(device)
            times.append(time.perf_counter() - start)
    peak = probe.mb
    return sorted(times)[len(times) // 2], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vggt-1b")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (vggt.utils.device)")
    parser.add_argument("--dtype", default="auto", help="auto, float32/fp32, bfloat16/bf16 or float16/fp16")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--sizes", type=_parse_size, nargs="+", default=[(294, 518), (518, 518)])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--full", action="store_true", help="the reference forward pass instead of the streaming engine"
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    torch.manual_seed(0)
    model = VGGT.from_preset(args.preset).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"# preset={args.preset} params={params / 1e6:.1f}M device={device} dtype={dtype} torch={torch.__version__}")
    print(f"{'size':>9} {'frames':>6} {'seconds':>9} {'peak MB':>9}")
    engine = None if args.full else StreamingEngine.auto(device, max_frames_chunk_size=model.config.frames_chunk_size)
    for size in args.sizes:
        for _ in range(args.warmup):
            run_once(model, args.frames[0], size, device, dtype, 1, engine)
        results = []
        for frames in args.frames:
            seconds, peak = run_once(model, frames, size, device, dtype, args.repeats, engine)
            results.append((frames, peak))
            print(f"{size[0]:>4}x{size[1]:<4} {frames:>6} {seconds:>9.3f} {peak:>9.1f}", flush=True)
        if len(results) > 1:
            (f0, m0), (f1, m1) = results[0], results[-1]
            print(f"{size[0]:>4}x{size[1]:<4} memory added per frame: {(m1 - m0) / (f1 - f0):.1f} MB")


if __name__ == "__main__":
    main()
