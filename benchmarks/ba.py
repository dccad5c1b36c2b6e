"""Time and accuracy of vggt.ba.bundle_adjust (Theseus) against pycolmap's bundle adjustment (Ceres).

    .venv/bin/python benchmarks/ba.py --frames 10 50 100 --points 200 --track-length 10

Each problem is a synthetic ring of cameras perturbed by 2 deg / 5 % translation / 5 % focal / 3 % points with
1 px track noise; the table reports the mean inlier reprojection error (px), the mean relative rotation error
(deg), our Levenberg-Marquardt iterations and the wall time of each solver. One-time costs (importing Theseus,
defining its classes) are paid by a small warm-up solve before the table and printed apart. `--threads` sets
torch's and Ceres' thread counts (default: each library's own).
"""

from __future__ import annotations

import argparse
import time

import torch

from vggt.ba import bundle_adjust
from vggt.ba.ceres import pycolmap_bundle_adjust
from vggt.ba.testing import make_scene, mean_reprojection_error, perturb, relative_rotation_errors

WARMUP_FRAMES, WARMUP_POINTS = 3, 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--track-length", type=int, default=10, help="frames that see each point")
    parser.add_argument("--outlier-ratio", type=float, default=0.0)
    parser.add_argument("--loss", choices=["cauchy", "huber", "none"], default="cauchy")
    parser.add_argument("--max-iterations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch and Ceres threads")
    args = parser.parse_args()
    loss = None if args.loss == "none" else args.loss
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    warmup = make_scene(WARMUP_FRAMES, WARMUP_POINTS)
    bundle_adjust(*perturb(warmup), warmup.tracks, warmup.mask, warmup.image_size, loss=loss, max_iterations=2)
    pycolmap_bundle_adjust(*perturb(warmup), warmup.tracks, warmup.mask, warmup.image_size, max_iterations=2)
    warmup_seconds = time.perf_counter() - start
    print(f"warm-up (imports, first solve): {warmup_seconds:.2f} s; torch threads {torch.get_num_threads()}")

    header = f"{'frames':>6} {'obs':>6} | {'err init':>8} {'err ours':>8} {'err colmap':>10} | "
    header += f"{'rot init':>8} {'rot ours':>8} {'rot colmap':>10} | {'iters':>5} {'t ours s':>8} {'t colmap s':>10}"
    print(header)
    print("-" * len(header))
    for frames in args.frames:
        scene = make_scene(frames, args.points, outlier_ratio=args.outlier_ratio, track_length=args.track_length)
        init = perturb(scene)
        inliers = scene.mask & ~scene.outlier_mask
        start = time.perf_counter()
        ours = bundle_adjust(
            *init, scene.tracks, scene.mask, scene.image_size, loss=loss, max_iterations=args.max_iterations
        )
        time_ours = time.perf_counter() - start
        start = time.perf_counter()
        colmap = pycolmap_bundle_adjust(
            *init,
            scene.tracks,
            scene.mask,
            scene.image_size,
            loss=loss,
            max_iterations=args.max_iterations,
            num_threads=args.threads,
        )
        time_colmap = time.perf_counter() - start
        errors = [
            mean_reprojection_error(*solution, scene.tracks, inliers)
            for solution in (init, (ours.extrinsics, ours.intrinsics, ours.points3d), colmap)
        ]
        rotations = [
            relative_rotation_errors(extrinsics, scene.extrinsics).mean()
            for extrinsics in (init[0], ours.extrinsics, colmap[0])
        ]
        print(
            f"{frames:>6} {int(scene.mask.sum()):>6} | {errors[0]:>8.3f} {errors[1]:>8.3f} {errors[2]:>10.3f} | "
            f"{rotations[0]:>8.3f} {rotations[1]:>8.3f} {rotations[2]:>10.3f} | "
            f"{ours.num_iterations:>5} {time_ours:>8.2f} {time_colmap:>10.2f}"
        )


if __name__ == "__main__":
    main()
