"""EGG-compatible callbacks: the same hook names and signatures as ``egg.core.callbacks``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm.auto import tqdm

from egg_zoo_discritune.engine.distributed import current_context
from egg_zoo_discritune.engine.interaction import Interaction


class Callback:
    """Base class; every hook is optional. ``on_train_begin`` stores the trainer as ``self.trainer``."""

    def on_train_begin(self, trainer_instance: Any) -> None:
        self.trainer = trainer_instance

    def on_train_end(self) -> None:
        pass

    def on_early_stopping(self, train_loss, train_logs, epoch, test_loss=None, test_logs=None) -> None:
        pass

    def on_validation_begin(self, epoch: int) -> None:
        pass

    def on_validation_end(self, loss: float, logs: Interaction, epoch: int) -> None:
        pass

    def on_epoch_begin(self, epoch: int) -> None:
        pass

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int) -> None:
        pass

    def on_batch_end(self, logs: Interaction, loss: float, batch_id: int, is_training: bool = True) -> None:
        pass


def aggregate(loss: float, logs: Interaction) -> dict:
    """Loss plus the mean of every per-sample ``aux`` entry, as EGG's loggers report them."""
    summary = {"loss": float(loss)}
    summary.update({k: v.float().mean().item() for k, v in logs.aux.items()})
    return summary


class ConsoleLogger(Callback):
    """Prints the epoch's loss and aux means; ``as_json`` prints one JSON object per line (EGG's format)."""

    def __init__(self, print_train_loss: bool = False, as_json: bool = False):
        self.print_train_loss = print_train_loss
        self.as_json = as_json

    def _print(self, loss: float, logs: Interaction, mode: str, epoch: int) -> None:
        summary = aggregate(loss, logs)
        if self.as_json:
            summary.update(mode=mode, epoch=epoch)
            print(json.dumps(summary), flush=True)
        else:
            print(f"{mode}: epoch {epoch}, " + ", ".join(f"{k}={v:.4g}" for k, v in summary.items()), flush=True)

    def on_validation_end(self, loss: float, logs: Interaction, epoch: int) -> None:
        self._print(loss, logs, "test", epoch)

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int) -> None:
        if self.print_train_loss:
            self._print(loss, logs, "train", epoch)


class ProgressBarLogger(Callback):
    """Progress bars over the batches of each epoch and validation pass, with running loss and accuracy."""

    def __init__(self, n_epochs: int, train_data_len: int = 0, test_data_len: int = 0, use_info_table: bool = True):
        self.n_epochs = n_epochs
        self.train_data_len = train_data_len
        self.test_data_len = test_data_len
        self.use_info_table = use_info_table
        self.bar: Optional[tqdm] = None

    def _open(self, total: int, desc: str) -> None:
        # disable=None: no bar when the output is not a terminal (logs, CI)
        self.bar = tqdm(total=total or None, desc=desc, leave=False, dynamic_ncols=True, disable=None)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_begin(self, epoch: int) -> None:
        self._open(self.train_data_len, f"train {epoch}/{self.n_epochs}")

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int) -> None:
        self._close()

    def on_validation_begin(self, epoch: int) -> None:
        self._open(self.test_data_len, f"test {epoch}/{self.n_epochs}")

    def on_validation_end(self, loss: float, logs: Interaction, epoch: int) -> None:
        self._close()

    def on_batch_end(self, logs: Interaction, loss: float, batch_id: int, is_training: bool = True) -> None:
        if self.bar is None:
            return
        if self.use_info_table:
            self.bar.set_postfix(aggregate(float(loss), logs), refresh=False)
        self.bar.update(1)


class InteractionSaver(Callback):
    """EGG's ``InteractionSaver``: the epoch's whole interaction (training epochs ``train_epochs``,
    validations ``test_epochs``) to ``<checkpoint_dir>/interactions/<train|validation>/epoch_<k>/
    interaction_gpu<rank>``, by rank 0 when the interactions are gathered across processes.
    ``engine.interaction.load_interactions`` reads a file back."""

    def __init__(self, train_epochs: Optional[list[int]] = None, test_epochs: Optional[list[int]] = None,
                 checkpoint_dir: str = "", aggregated_interaction: bool = True):
        self.train_epochs = list(train_epochs or [])
        self.test_epochs = list(test_epochs or [])
        self.checkpoint_dir = Path(checkpoint_dir or ".") / "interactions"
        self.aggregated_interaction = aggregated_interaction

    def _dump(self, logs: Interaction, mode: str, epoch: int) -> None:
        context = current_context()
        if self.aggregated_interaction and not context.is_leader:
            return
        folder = self.checkpoint_dir / mode / f"epoch_{epoch}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(logs, folder / f"interaction_gpu{context.rank}")

    def on_epoch_end(self, loss: float, logs: Interaction, epoch: int) -> None:
        if epoch in self.train_epochs:
            self._dump(logs, "train", epoch)

    def on_validation_end(self, loss: float, logs: Interaction, epoch: int) -> None:
        if epoch in self.test_epochs:
            self._dump(logs, "validation", epoch)
