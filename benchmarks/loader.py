"""Training-loader throughput: frames per second from scene folders, with and without augmentation.

Writes synthetic scene folders (PNG images, float32 .npy depth) once, then times whole batches of the trainer's
loader (`training.data.build_train_loader`) at the paper's frame budget (48 frames per GPU).

    python benchmarks/loader.py                                   # 4 scenes x 24 frames at 392 x 518, 5 batches
    python benchmarks/loader.py --batches 10 --workers 2 --json out.json
    python benchmarks/loader.py --threads 1                       # one loading thread (default: data.num_threads)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(
    root: Path, augment: bool, batches: int, workers: int, frames_per_gpu: int, size: int, threads: int | None = None
) -> dict:
    from training.data import build_train_loader

    config = {
        "source": "folders",
        "roots": [str(root)],
        "frames_per_gpu": frames_per_gpu,
        "num_frames": [24, 24],
        "batches_per_epoch": batches + 1,
        "augment": augment,
        "num_workers": workers,
        "num_threads": threads,
        "image": {"max_size": size},
    }
    loader = build_train_loader(config, seed=0)
    iterator = loader.iterate(epoch=0)
    next(iterator)  # warm-up: worker start, first file reads
    start, frames = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        frames += batch["images"].shape[0] * batch["images"].shape[1]
    seconds = time.perf_counter() - start
    return {"augment": augment, "frames": frames, "seconds": seconds, "frames_per_s": frames / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="loading threads per process (data.num_threads)")
    parser.add_argument("--frames-per-gpu", type=int, default=48)
    parser.add_argument("--size", type=int, default=518, help="longest output side")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from vggt.data.synthetic import write_synthetic_dataset

    results = []
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_dataset(folder, num_scenes=4, num_frames=24, height=392, width=518, seed=0)
        for augment in (False, True):
            result = measure(
                Path(folder), augment, args.batches, args.workers, args.frames_per_gpu, args.size, args.threads
            )
            results.append(result)
            per_batch = result["seconds"] / args.batches
            print(f"augment={augment!s:5}  {result['frames_per_s']:6.1f} frames/s  {per_batch:.2f} s per batch")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
