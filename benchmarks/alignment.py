"""Window-to-window Sim(3) alignment: one weighted Umeyama solve against IRLS with Huber and Cauchy weights.

    .venv/bin/python benchmarks/alignment.py --trials 50

Each trial makes a synthetic ring sequence (benchmarks/synthetic_windows.py) and two windows of it sharing
`--overlap` frames, each in its own random similarity frame, with point noise `--noise * depth / sqrt(conf)`
(confidence uniform in [1, 10]); in the second window a fraction of the points are outliers, at a wrong depth
along their ray ("depth", x0.5 to x1.5) or uniform in the scene's bounding box ("random").
`link_from_shared_frames` fits the similarity from the second window to the first with each estimator; the
table gives the median and the 95th percentile over the trials of the rotation error (deg), the translation
error (fraction of the shared points' RMS spread, in the first window's units), the relative scale error (%),
the weighted Umeyama solves run and the median wall time of one fit (ms).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from synthetic_windows import make_sequence, predict_window

from vggt.utils.similarity import ESTIMATORS, Similarity, rotation_log
from vggt.utils.windows import link_from_shared_frames, shared_frames, window_ranges


def link_errors(estimate: Similarity, truth: Similarity, spread: float) -> tuple[float, float, float]:
    """Rotation error (deg), translation error (fraction of `spread`), relative scale error (%)."""
    rotation = np.rad2deg(np.linalg.norm(rotation_log(estimate.rotation @ truth.rotation.T)))
    translation = np.linalg.norm(estimate.translation - truth.translation) / spread
    return rotation, translation, 100 * abs(estimate.scale / truth.scale - 1)


def run_trial(args: argparse.Namespace, ratio: float, kind: str, seed: int) -> dict[str, tuple]:
    """Errors and time of each estimator on one pair of windows."""
    rng = np.random.default_rng(seed)
    sequence = make_sequence(2 * args.window - args.overlap, args.height, args.width, seed=seed)
    previous_frames, current_frames = window_ranges(len(sequence.depths), args.window, args.overlap)
    # Outliers only in the second window, so that `ratio` is the fraction of outlier pairs.
    previous = predict_window(sequence, previous_frames, args.noise, 0.0, kind, rng)
    current = predict_window(sequence, current_frames, args.noise, ratio, kind, rng)
    in_previous, in_current = shared_frames(previous_frames, current_frames)
    truth = previous.window_from_world @ current.window_from_world.inverse()
    shared = previous.points[in_previous].reshape(-1, 3)
    spread = float(np.sqrt(np.mean(np.sum((shared - shared.mean(0)) ** 2, axis=1))))
    results = {}
    for estimator in ESTIMATORS:
        start = time.perf_counter()
        fit = link_from_shared_frames(
            previous.points[in_previous],
            current.points[in_current],
            previous.confidence[in_previous],
            current.confidence[in_current],
            estimator=estimator,
        )
        seconds = time.perf_counter() - start
        results[estimator] = (*link_errors(fit.similarity, truth, spread), seconds, fit.iterations)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--outliers", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4])
    parser.add_argument("--kinds", nargs="+", choices=["depth", "random"], default=["depth", "random"])
    parser.add_argument("--noise", type=float, default=0.02, help="point noise per axis, fraction of depth")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    points = args.overlap * args.height * args.width
    print(f"{args.trials} trials, {points} shared points, noise {args.noise} x depth / sqrt(confidence)\n")
    columns = ["outliers", "estimator", "rot med (deg)", "rot p95", "trans med (x spread)", "trans p95"]
    columns += ["scale med (%)", "scale p95", "iterations", "time (ms)"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for ratio in args.outliers:
            trials = [run_trial(args, ratio, kind, seed) for seed in range(args.trials)]
            for estimator in ESTIMATORS:
                values = np.array([trial[estimator] for trial in trials])  # [T, 5]
                median, p95 = np.median(values, axis=0), np.percentile(values, 95, axis=0)
                print(
                    f"| {100 * ratio:.0f} % {kind} | {estimator} | {median[0]:.4f} | {p95[0]:.4f} | {median[1]:.5f} | "
                    f"{p95[1]:.5f} | {median[2]:.3f} | {p95[2]:.3f} | {median[4]:.0f} | {1000 * median[3]:.1f} |"
                )


if __name__ == "__main__":
    main()
