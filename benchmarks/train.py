"""Training step time and peak memory, with and without gradient checkpointing and bf16 autocast.

Each measurement runs in a fresh process so that peak memory belongs to it alone: on GPU the peak of
`torch.cuda.max_memory_allocated`, on CPU the peak resident set size of the process. A step is the
trainer's full optimizer step (forward, multi-task loss, backward, clipping, AdamW) on one synthetic
batch that is reused, so data loading is not timed.

    python benchmarks/train.py                                   # tiny preset, CPU-friendly sizes
    python benchmarks/train.py --presets tiny vggt-1b --frames 8 --size 518 --steps 5
    python benchmarks/train.py --presets vggt-1b --frames 24 --size 518 --track --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIB = 1024
MIB = 1024**2


def measure(args: argparse.Namespace) -> dict:
    """One configuration, in this process: mean seconds per step after warm-up, and peak memory."""
    import torch

    from training.train import load_config
    from training.trainer import Trainer

    heads = "[camera,depth,point,track]" if args.track else "[camera,depth,point]"
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [
            f"run_dir={run_dir}",
            f"device={args.device}",
            f"model.preset={args.preset}",
            f"model.heads={heads}",
            f"model.gradient_checkpointing={args.checkpointing}",
            f"precision={'bf16' if args.bf16 else 'fp32'}",
            "data.source=synthetic",
            "data.num_scenes=1",
            f"data.frames_per_gpu={args.frames * args.batch}",
            f"data.num_frames=[{args.frames},{args.frames}]",
            f"data.image.max_size={args.size}",
            f"data.image.aspect_range=[{args.aspect},{args.aspect}]",
            "data.augment=false",
            f"optim.max_steps={args.steps + args.warmup}",
            "optim.warmup_steps=0",
            "logging.progress=false",
            "logging.tensorboard=false",
        ]
        if args.threads:
            overrides.append(f"threads={args.threads}")
        trainer = Trainer(load_config(REPO / "configs" / "tiny_synthetic.yaml", overrides))
        batch = next(trainer._batches())
        batches = itertools.repeat(batch)
        device = trainer.ctx.device
        for _ in range(args.warmup):
            trainer.train_step(batches)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.steps):
            metrics = trainer.train_step(batches)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.steps
        if device.type == "cuda":
            peak_mib = torch.cuda.max_memory_allocated() / MIB
        else:
            peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MIB  # Linux reports KiB
        return {
            "preset": args.preset,
            "device": str(device),
            "checkpointing": args.checkpointing,
            "bf16": args.bf16,
            "batch": args.batch,
            "frames": args.frames,
            "image_hw": list(batch["images"].shape[-2:]),
            "track": args.track,
            "seconds_per_step": seconds,
            "peak_memory_mib": peak_mib,
            "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
            "loss": metrics["loss"],
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny"], help="model presets: tiny, vggt-1b")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--frames", type=int, default=4, help="frames per sample")
    parser.add_argument("--batch", type=int, default=1, help="samples per step")
    parser.add_argument("--size", type=int, default=70, help="longest image side (a multiple of 14 is used)")
    parser.add_argument("--aspect", type=float, default=0.8, help="image height / width")
    parser.add_argument("--track", action="store_true", help="also train the track head")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    # Internal: measure one configuration in this process and print its JSON.
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", type=lambda s: s == "true", default=True, help=argparse.SUPPRESS)
    parser.add_argument("--bf16", type=lambda s: s == "true", default=False, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.single:
        print(json.dumps(measure(args)))
        return 0
    shared = [
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--frames", str(args.frames),
        "--batch", str(args.batch), "--size", str(args.size), "--aspect", str(args.aspect), "--device", args.device,
    ]  # fmt: skip
    if args.track:
        shared.append("--track")
    if args.threads:
        shared += ["--threads", str(args.threads)]
    results = []
    header = f"{'preset':<8} {'ckpt':<5} {'bf16':<5} {'s/step':>9} {'peak MiB':>10}  device, images"
    print(header)
    for preset, checkpointing, bf16 in itertools.product(args.presets, (True, False), (False, True)):
        command = [sys.executable, __file__, "--single", "--preset", preset]
        command += ["--checkpointing", str(checkpointing).lower(), "--bf16", str(bf16).lower(), *shared]
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{preset:<8} {str(checkpointing):<5} {str(bf16):<5} failed: {done.stderr.strip()[-300:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(
            f"{preset:<8} {str(checkpointing):<5} {str(bf16):<5} {result['seconds_per_step']:>9.3f} "
            f"{result['peak_memory_mib']:>10.0f}  {result['device']}, "
            f"{result['batch']}x{result['frames']}x{result['image_hw'][0]}x{result['image_hw'][1]}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
