"""Learning that generalises: train the documented recipe, score it on held-out synthetic scenes, print the table.

    python benchmarks/learning.py                  # writes held-out scenes, trains both runs, evaluates (~50 min)
    python benchmarks/learning.py --skip-train     # re-evaluates the runs already in --runs-root
    python benchmarks/learning.py --config configs/synthetic_small.yaml --seed 1 --num-scenes 32 --json out.json

Every step is the documented command (docs/training.md), run as a subprocess:

    python -m vggt.data.synthetic --out HELDOUT --num-scenes 32 --seed 1 --like configs/synthetic_small.yaml
    python -m training.train --config configs/synthetic_small.yaml run_dir=RUNS/synthetic_small VALIDATION
    python -m training.train --config configs/tiny_synthetic.yaml run_dir=RUNS/tiny_synthetic VALIDATION
    python -m vggt evaluate --data HELDOUT --checkpoint RUNS/<run>/final --out RUNS/<run>/heldout --device cpu

(VALIDATION: `validation.scenes=[HELDOUT] validation.every=3000`, which draws the held-out metrics into each
run's curves.png) and, for scale, the same evaluation of random weights: the recipe's model as its trainer
initialises it (same seed), saved with its training resolution. Each training run reports its wall time, its CPU
time (user + system, all threads: what it costs on an idle machine) and the machine's load (`uptime`) before and
after, since the machine may be shared. Training runs of a run_dir that already holds checkpoints are refused by
the trainer: pass another --runs-root or --skip-train.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "synthetic_small.yaml"
DEMO = REPO / "configs" / "tiny_synthetic.yaml"
EVAL_FLAGS = ("--device", "cpu", "--dtype", "float32", "-q")
VALIDATION_EVERY = 3000
# (metric group, metric, column title) of the printed table.
COLUMNS = (
    ("camera", "AUC@30", "camera AUC@30"),
    ("camera", "AUC@15", "AUC@15"),
    ("camera", "AUC@5", "AUC@5"),
    ("camera", "RRA@15", "RRA@15"),
    ("camera", "RTA@15", "RTA@15"),
    ("depth", "abs_rel", "depth AbsRel"),
    ("depth", "delta_1.25", "delta < 1.25"),
    ("depth_points", "chamfer", "depth-points Chamfer"),
    ("tracks", "delta_avg", "tracks delta_avg"),
)


def command(*args: str | Path) -> dict[str, float]:
    """Run `python args...` from the repository root; returns wall and CPU seconds and the load around it."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, *map(str, args)]
    print("$ " + " ".join(["python", *map(str, args)]), flush=True)
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, check=True)
    wall = time.perf_counter() - start
    after_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after_cpu.ru_utime - before_cpu.ru_utime) + (after_cpu.ru_stime - before_cpu.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load_before": load_before, "load_after": os.getloadavg()[0]}


def save_initial_weights(config_path: Path, out_dir: Path) -> Path:
    """The model a run of `config_path` starts from (its seed, preset and heads), with its training resolution."""
    import dataclasses

    from training.config import load_config
    from training.data import DataConfig
    from training.distributed import seed_everything
    from training.trainer import build_model

    config = load_config(config_path)
    seed_everything(int(config["seed"]))
    model = build_model(config["model"])
    resolution = DataConfig.from_dict(config["data"]).resolution
    model.config = dataclasses.replace(model.config, train_resolution=resolution)
    model.save_pretrained(out_dir)
    return out_dir


def evaluate(checkpoint: Path, heldout: Path, out_dir: Path) -> dict:
    command("-m", "vggt", "evaluate", "--data", heldout, "--checkpoint", checkpoint, "--out", out_dir, *EVAL_FLAGS)
    return json.loads((out_dir / "metrics.json").read_text())["overall"]


def markdown(rows: list[dict]) -> str:
    header = ["model", "training", "wall", "CPU"] + [title for _, _, title in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        timing = row.get("timing")
        cells = [row["name"], row["training"]]
        cells += [f"{timing['wall_s'] / 60:.1f} min", f"{timing['cpu_s'] / 60:.1f} min"] if timing else ["-", "-"]
        for group, metric, _ in COLUMNS:
            value = row["metrics"].get(group, {}).get(metric)
            cells.append("-" if value is None else f"{value:.3f}" if metric == "abs_rel" else f"{value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=RECIPE, help="the recipe (default configs/synthetic_small.yaml)")
    parser.add_argument("--demo-config", type=Path, default=DEMO, help="the demo to compare with (tiny_synthetic.yaml)")
    parser.add_argument("--runs-root", type=Path, default=REPO / "runs" / "learning", help="run folders go here")
    parser.add_argument("--num-scenes", type=int, default=32, help="held-out scenes (default 32)")
    parser.add_argument("--seed", type=int, default=1, help="held-out seed; must differ from the recipe's (default 1)")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the runs already in --runs-root")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    root = args.runs_root.resolve()
    heldout = root / "heldout"
    if not heldout.is_dir():
        command("-m", "vggt.data.synthetic", "--out", heldout, "--num-scenes", str(args.num_scenes),
                "--seed", str(args.seed), "--like", args.config)  # fmt: skip
    rows = []
    for name, config in ((args.config.stem, args.config), (args.demo_config.stem, args.demo_config)):
        run_dir = root / name
        timing = None
        if not args.skip_train:
            print(f"uptime before: {os.getloadavg()}", flush=True)
            # The held-out metrics join the learning curves (curves.png) every VALIDATION_EVERY steps and at the end.
            validation = (f"validation.scenes=[{heldout}]", f"validation.every={VALIDATION_EVERY}")
            timing = command("-m", "training.train", "--config", config, f"run_dir={run_dir}", "logging.progress=false",
                             *validation)  # fmt: skip
            print(f"{name}: {timing}", flush=True)
        steps = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        metrics = evaluate(run_dir / "final", heldout, run_dir / "heldout")
        rows.append({"name": name, "training": f"{steps} steps", "timing": timing, "metrics": metrics})
    initial = save_initial_weights(args.config, root / "random_weights")
    rows.append({"name": f"random weights ({args.config.stem})", "training": "none", "timing": None,
                 "metrics": evaluate(initial, heldout, root / "random_weights" / "heldout")})  # fmt: skip
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
