"""Checkpoints of the trainable state only (never the frozen retriever), written atomically.

Used under both engines: EGG's own ``CheckpointSaver`` would save the whole game (frozen CLIP
included) and its loader calls ``torch.load`` without ``weights_only``, which torch >= 2.6 refuses
for its pickled NamedTuple. A checkpoint here is a plain dict that ``torch.load(weights_only=True)``
reads back.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from egg_zoo_discritune.engine.callbacks import Callback
from egg_zoo_discritune.engine.distributed import all_gather_lists, current_context
from egg_zoo_discritune.torch_files import load_torch_file


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then raise it: a ``KeyboardInterrupt`` inside ``torch.save``
    makes its zip writer fail on exit with a ``RuntimeError`` that hides the interrupt, and loses the save."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        signal.raise_signal(signal.SIGINT)  # to the handler that was there: KeyboardInterrupt, by default


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file.
    A Ctrl-C during the write takes effect once the file is in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with sigint_held():
            with open(tmp, "wb") as f:  # a file object, so the archive's inner name is not the random temporary one
                torch.save(obj, f)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unwrap(game: torch.nn.Module) -> torch.nn.Module:
    """The game inside a ``DistributedDataParallel`` wrapper, or the game itself."""
    return getattr(game, "module", game)


def rng_state() -> dict:
    """This process's random generators: Python's, torch's CPU one and, where there is one, CUDA's."""
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainer_state(trainer: Any, epoch: int, metadata: Optional[dict] = None,
                  rng_states: Optional[list[dict]] = None) -> dict:
    """Everything a resumed run needs; ``rng_states``: every rank's generators (by default this process's)."""
    scheduler = getattr(trainer, "optimizer_scheduler", None)
    scaler = getattr(trainer, "scaler", None)
    return {
        "epoch": epoch,
        "model_state_dict": unwrap(trainer.game).checkpoint_state_dict(),
        "optimizer_state_dict": trainer.optimizer.state_dict(),
        "optimizer_scheduler_state_dict": scheduler.state_dict() if scheduler is not None else None,
        "grad_scaler_state_dict": scaler.state_dict() if scaler is not None else None,
        "rng_states": rng_states or [rng_state()],
        "metadata": metadata or {},
    }


CHECKPOINT_KEYS = ("epoch", "model_state_dict", "optimizer_state_dict", "rng_states")


def load_checkpoint(path: Path) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    checkpoint = load_torch_file(Path(path), "a training checkpoint")
    if not isinstance(checkpoint, dict) or not set(CHECKPOINT_KEYS) <= set(checkpoint):
        raise ValueError(f"{path}: not a training checkpoint of this package (a dict with "
                         f"{', '.join(CHECKPOINT_KEYS)}); a captioner's weights go to --clipcap_weights")
    return checkpoint


def restore(trainer: Any, checkpoint: dict, path: Path | str = "the checkpoint") -> None:
    """Puts a checkpoint's state, read from ``path``, into a freshly built trainer, so ``train`` continues
    where it stopped."""
    try:
        unwrap(trainer.game).load_checkpoint_state_dict(checkpoint["model_state_dict"])
        trainer.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    scheduler = getattr(trainer, "optimizer_scheduler", None)
    if scheduler is not None and checkpoint["optimizer_scheduler_state_dict"] is not None:
        scheduler.load_state_dict(checkpoint["optimizer_scheduler_state_dict"])
    scaler = getattr(trainer, "scaler", None)
    if scaler is not None and checkpoint["grad_scaler_state_dict"] is not None:
        scaler.load_state_dict(checkpoint["grad_scaler_state_dict"])
    states, context = checkpoint["rng_states"], current_context()
    if len(states) != context.world_size:
        raise ValueError(f"the checkpoint holds the random state of {len(states)} processes, and this run has "
                         f"{context.world_size}: resume with as many")
    set_rng_state(states[context.rank])
    trainer.start_epoch = checkpoint["epoch"]


class CheckpointSaver(Callback):
    """EGG's ``CheckpointSaver`` interface: ``<prefix>_<epoch>.tar`` every ``checkpoint_freq`` epochs
    (0: only at the end) and ``<prefix>_final.tar`` (``<epoch>.tar`` / ``final.tar`` without prefix),
    keeping the newest ``max_checkpoints`` epoch files. Under torchrun every process runs it, so each
    one's random state is gathered; rank 0 alone writes."""

    def __init__(self, checkpoint_path: str, checkpoint_freq: int = 1, prefix: str = "",
                 max_checkpoints: int = sys.maxsize, metadata: Optional[dict] = None):
        self.checkpoint_path = Path(checkpoint_path)
        self.checkpoint_freq = checkpoint_freq
        self.prefix = prefix
        self.max_checkpoints = max_checkpoints
        self.metadata = metadata
        self.epoch = 0
        self.saved: list[Path] = []

    def on_train_begin(self, trainer_instance: Any) -> None:
        super().on_train_begin(trainer_instance)
        self.epoch = trainer_instance.start_epoch

    def _path(self, name: str) -> Path:
        return self.checkpoint_path / (f"{self.prefix}_{name}.tar" if self.prefix else f"{name}.tar")

    def on_epoch_end(self, loss: float, logs: Any, epoch: int) -> None:
        self.epoch = epoch
        if self.checkpoint_freq > 0 and epoch % self.checkpoint_freq == 0:
            path = self._path(str(epoch))
            if not self._save(epoch, path):
                return
            self.saved.append(path)
            while len(self.saved) > self.max_checkpoints:
                self.saved.pop(0).unlink(missing_ok=True)

    def on_train_end(self) -> None:
        self._save(self.epoch, self._path("final"))

    def _save(self, epoch: int, path: Path) -> bool:
        """Writes the checkpoint on rank 0 (and says so) after gathering every rank's random state."""
        states = all_gather_lists([rng_state()])
        if not current_context().is_leader:
            return False
        atomic_save(trainer_state(self.trainer, epoch, self.metadata, states), path)
        return True


class ExportOnTrainEnd(Callback):
    """Writes ``export_fn()`` (e.g. the finetuned captioner in its original file format) at the end."""

    def __init__(self, path: Path, export_fn: Callable[[], dict]):
        self.path = Path(path)
        self.export_fn = export_fn

    def on_train_end(self) -> None:
        atomic_save(self.export_fn(), self.path)
