"""The run directory: resolved config, JSON-lines log, checkpoints. Never silently overwritten."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import torch

from egg_zoo_discritune.engine.callbacks import Callback, aggregate

CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"


def prepare_run_dir(checkpoint_dir: Optional[str], name: str, resume: bool) -> Path:
    """The run's folder; an existing non-empty one is an error unless the run resumes."""
    run_dir = Path(checkpoint_dir) if checkpoint_dir else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume: run directory {run_dir} does not exist")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} exists and is not empty: pass --resume to continue "
                              "that run, or choose another --checkpoint_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def latest_checkpoint(run_dir: Path) -> Path:
    """``final.tar`` if the run finished, else the highest-epoch ``<epoch>.tar``."""
    if (run_dir / "final.tar").is_file():
        return run_dir / "final.tar"
    epochs = sorted((int(p.stem), p) for p in run_dir.glob("*.tar") if p.stem.isdigit())
    if not epochs:
        raise FileNotFoundError(f"--resume: no checkpoint (*.tar) in {run_dir}")
    return epochs[-1][1]


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


class JsonlLogger(Callback):
    """Appends one JSON object per line to ``log.jsonl``: running means every ``log_every`` updates
    (mode ``train_step``) and EGG-style epoch summaries (modes ``train`` and ``test``)."""

    def __init__(self, path: Path, log_every: int = 50):
        self.path = Path(path)
        self.log_every = log_every
        self.step = 0
        self.window: list = []

    def on_train_begin(self, trainer_instance) -> None:
        super().on_train_begin(trainer_instance)
        self.step = trainer_instance.start_epoch * len(trainer_instance.train_data)

    def _write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_batch_end(self, logs, loss, batch_id: int, is_training: bool = True) -> None:
        if not is_training:
            return
        self.step += 1
        self.window.append((float(loss.detach()) if torch.is_tensor(loss) else float(loss), logs))  # EGG's is attached
        if self.log_every > 0 and self.step % self.log_every == 0:
            summaries = [aggregate(l, i) for l, i in self.window]
            record = {k: sum(s[k] for s in summaries) / len(summaries) for k in summaries[0]}
            self._write({**record, "mode": "train_step", "step": self.step})
            self.window = []

    def on_epoch_end(self, loss: float, logs, epoch: int) -> None:
        self._write({**aggregate(loss, logs), "mode": "train", "epoch": epoch, "step": self.step})

    def on_validation_end(self, loss: float, logs, epoch: int) -> None:
        self._write({**aggregate(loss, logs), "mode": "test", "epoch": epoch, "step": self.step})
