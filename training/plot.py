"""Learning curves from the `metrics.jsonl` of training runs.

    python -m training.plot runs/a                      # writes runs/a/curves.png
    python -m training.plot runs/a runs/b -o cmp.png    # overlays several runs in one PNG

One panel per quantity: the total loss, each loss term (with its parts, such as `camera_T`, when one run is
shown), the learning rate, and every held-out metric (`val/...`) the runs logged. The trainer redraws
`<run_dir>/curves.png` at its logged steps (`CurvesWriter`), so the file follows a run as it goes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
TERM_FAMILIES = ("camera", "depth", "point", "track")
VALIDATION_PREFIX = "val/"
PANEL_COLUMNS = 3
PANEL_SIZE_IN = (4.2, 2.8)
DPI = 90
# Drawing the curves (about 0.5 s on a CPU core) may take at most this share of a run's time.
CURVES_MAX_TIME_FRACTION = 0.05


def read_metrics(run_dir: Path | str) -> list[dict]:
    """The records of `<run_dir>/metrics.jsonl` (a line still being written is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass the run_dir of a training run (it holds {METRICS_FILE})")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def panels(runs: Sequence[list[dict]]) -> list[tuple[str, list[str]]]:
    """(title, metric names) per panel, for what the runs logged."""
    keys = {key for records in runs for record in records for key in record}
    with_parts = len(runs) == 1
    layout: list[tuple[str, list[str]]] = [("loss", ["loss"])] if "loss" in keys else []
    for family in TERM_FAMILIES:
        parts = sorted(key for key in keys if key.startswith(f"{family}_")) if with_parts else []
        names = ([family] if family in keys else []) + parts
        if names:
            layout.append((family, names))
    if "lr" in keys:
        layout.append(("learning rate", ["lr"]))
    layout.extend((key, [key]) for key in sorted(keys) if key.startswith(VALIDATION_PREFIX))
    return layout


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [s for s, _ in points], [v for _, v in points]


def plot_runs(run_dirs: Sequence[Path | str], out_path: Path | str, labels: Sequence[str] | None = None) -> Path:
    """Draw the learning curves of `run_dirs` into one PNG at `out_path` (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("plot_runs needs at least one run directory")
    labels = list(labels) if labels is not None else [d.name or str(d) for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"labels has {len(labels)} entries for {len(run_dirs)} run_dirs; give one label per run")
    runs = [read_metrics(d) for d in run_dirs]
    layout = panels(runs) or [("no metrics yet", [])]
    rows = math.ceil(len(layout) / PANEL_COLUMNS)
    columns = min(PANEL_COLUMNS, len(layout))
    figure = Figure(figsize=(PANEL_SIZE_IN[0] * columns, PANEL_SIZE_IN[1] * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for index, (title, names) in enumerate(layout):
        axes = figure.add_subplot(rows, columns, index + 1)
        for records, label, color in zip(runs, labels, colors):
            for rank, name in enumerate(names):
                steps, values = series(records, name)
                style = (
                    {"linewidth": 1.6, "marker": "o" if len(steps) < 3 else None} if rank == 0 else {"linewidth": 0.9}
                )
                line_label = name if len(runs) == 1 else label
                axes.plot(steps, values, color=color if len(runs) > 1 else f"C{rank}", label=line_label, **style)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        if title == "learning rate":
            axes.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        if axes.lines and (len(names) > 1 or len(runs) > 1):
            axes.legend(fontsize=7)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    figure.savefig(partial, format="png")
    os.replace(partial, out_path)
    return out_path


def write_curves(run_dir: Path | str) -> Path:
    """`<run_dir>/curves.png` from `<run_dir>/metrics.jsonl`."""
    return plot_runs([run_dir], Path(run_dir) / CURVES_FILE)


class CurvesWriter:
    """Regenerates `<run_dir>/curves.png` when asked (at each logged step), unless drawing would take more than
    `max_time_fraction` of the run's time: after a drawing of t seconds the next waits t / max_time_fraction.
    `update(force=True)` always draws (the run's last step)."""

    def __init__(self, run_dir: Path | str, max_time_fraction: float = CURVES_MAX_TIME_FRACTION) -> None:
        self.run_dir = Path(run_dir)
        self.max_time_fraction = max_time_fraction
        self._next_allowed = -math.inf

    def update(self, force: bool = False) -> Path | None:
        start = time.perf_counter()
        if not force and start < self._next_allowed:
            return None
        path = write_curves(self.run_dir)
        elapsed = time.perf_counter() - start
        self._next_allowed = start + elapsed / self.max_time_fraction
        return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (each holds metrics.jsonl)")
    default_out = f"RUN_DIR/{CURVES_FILE} for one run, ./{CURVES_FILE} for several"
    parser.add_argument("-o", "--out", type=Path, default=None, help=f"PNG to write (default: {default_out})")
    parser.add_argument("--labels", nargs="+", default=None, help="one legend label per run (default: folder names)")
    args = parser.parse_args(argv)
    out = args.out or (args.run_dirs[0] / CURVES_FILE if len(args.run_dirs) == 1 else Path(CURVES_FILE))
    try:
        written = plot_runs(args.run_dirs, out, args.labels)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
