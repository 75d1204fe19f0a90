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


def choose_run_dir(checkpoint_dir: Optional[str], name: str, resume: bool) -> Path:
    """The run's folder, not created yet (``write_run_config`` does, once the run has started well); an
    existing non-empty one is an error unless the run resumes."""
    run_dir = Path(checkpoint_dir) if checkpoint_dir else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume: run directory {run_dir} does not exist")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} exists and is not empty: pass --resume to continue "
                              "that run, or choose another --checkpoint_dir")
    return run_dir


def _changes(old: dict, new: dict, prefix: str = "") -> dict[str, list]:
    """``{"group.option": [old, new]}`` for every option whose value differs."""
    changed = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed.update(_changes(a, b, f"{prefix}{key}."))
        elif a != b:
            changed[f"{prefix}{key}"] = [a, b]
    return changed


def write_run_config(run_dir: Path, config: dict, resumed_from: Optional[Path] = None, epoch: int = 0) -> None:
    """``config.json``: the run's options; a resume rewrites it with the options now in force and appends
    when, from which checkpoint and epoch, and what changed to its ``resumes`` list."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    if resumed_from is not None and path.is_file():
        before = json.loads(path.read_text())
        resumes = before.pop("resumes", [])
        changed = {k: v for k, v in _changes(before, json.loads(json.dumps(config, default=str))).items()
                   if k != "run.resume"}
        resumes.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": str(resumed_from),
                        "epoch": epoch, "changed": changed})
        config = {**config, "resumes": resumes}
    write_json(path, config)


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
        epoch = trainer_instance.start_epoch
        self.step = epoch * len(trainer_instance.train_data)
        self._truncate(epoch)

    def _truncate(self, epoch: int) -> None:
        """Drops the records written after the checkpoint a run resumes from (a run killed mid-epoch
        logged steps it will redo), so no step appears twice."""
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if self._before(json.loads(line), epoch)]
        if len(kept) < len(lines):
            self.path.write_text("".join(kept))

    def _before(self, record: dict, epoch: int) -> bool:
        if record["mode"] == "train_step":
            return record["step"] <= self.step
        return record["epoch"] <= epoch

    def _write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_batch_end(self, logs, loss, batch_id: int, is_training: bool = True) -> None:
        if not is_training:
            return
        self.step += 1
        self.window.append((float(loss.detach()) if torch.is_tensor(loss) else float(loss), logs))  # EGG's is attached
        if self.log_every > 0 and self.step % self.log_every == 0:
            summaries = [aggregate(step_loss, step_logs) for step_loss, step_logs in self.window]
            record = {k: sum(s[k] for s in summaries) / len(summaries) for k in summaries[0]}
            self._write({**record, "mode": "train_step", "step": self.step})
            self.window = []

    def on_epoch_end(self, loss: float, logs, epoch: int) -> None:
        self._write({**aggregate(loss, logs), "mode": "train", "epoch": epoch, "step": self.step})

    def on_validation_end(self, loss: float, logs, epoch: int) -> None:
        self._write({**aggregate(loss, logs), "mode": "test", "epoch": epoch, "step": self.step})
