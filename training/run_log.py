"""What a run writes about itself: `config.yaml`, one JSON line per logged step in `metrics.jsonl`, the same
scalars in TensorBoard (`train/<name>`, `val/<name>`), `curves.png` (training.plot) and, with `logging.wandb`,
Weights & Biases (its files under `<run_dir>/wandb`; a resumed run continues the same wandb run).

Only the main process writes; a resumed run first drops the lines past its checkpoint.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.plot import METRICS_FILE, CurvesWriter

TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.yaml"
WANDB_ID_FILE = "wandb_run_id.txt"  # the wandb run a resumed run continues
WANDB_EXTRA = "pip install 'vggt[wandb]'"
WANDB_ID_BYTES = 4  # 8 hex digits, like wandb's own run ids


class RunLog:
    """The logs of one run in `run_dir`, continuing after `start_step` (0 for a new run)."""

    def __init__(self, run_dir: Path, log_cfg: Mapping[str, Any], config: Mapping[str, Any], start_step: int) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(run_dir / METRICS_FILE, start_step)
        (run_dir / CONFIG_FILE).write_text(dump_yaml(config))
        self._curves = CurvesWriter(run_dir) if log_cfg["curves"] else None
        self._writer = None
        if log_cfg["tensorboard"]:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1)
        self._wandb = _start_wandb(run_dir, log_cfg, config) if log_cfg["wandb"] else None

    def write(self, record: Mapping[str, Any], final: bool = False) -> None:
        """Append `record` ({"step": N, name: value, ...}) to every log; `final` forces the curves to redraw."""
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["step"]
        if self._writer is not None:
            for name, value in record.items():
                if name != "step":
                    self._writer.add_scalar(name if name.startswith("val/") else f"train/{name}", value, step)
        if self._wandb is not None:
            self._wandb.log({name: value for name, value in record.items() if name != "step"}, step=step)
        if self._curves is not None:
            self._curves.update(force=final)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()


def _start_wandb(run_dir: Path, log_cfg: Mapping[str, Any], config: Mapping[str, Any]) -> Any:
    """A wandb run logging into `run_dir/wandb`: the run of `run_dir` continued, or a new one."""
    try:
        import wandb
    except ImportError:
        raise ValueError(f"logging.wandb needs the wandb package: {WANDB_EXTRA}, or set logging.wandb=false") from None
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(WANDB_ID_BYTES)
    id_file.write_text(run_id + "\n")
    return wandb.init(
        project=log_cfg["wandb_project"],
        name=run_dir.name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        config=json.loads(json.dumps(config)),
    )


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop log lines past the checkpoint we resume from (written by the run that was interrupted)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def dump_yaml(config: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False)
