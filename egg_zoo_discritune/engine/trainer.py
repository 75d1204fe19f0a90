"""EGG-compatible ``Trainer``: same constructor, ``train``/``eval`` loop and callback order as egg.core.

Where EGG reads its options from the global ``core.get_opts()``, this trainer takes them as keyword
arguments (``validation_freq``, ``update_freq``, ``fp16``), so nothing is global. Under torchrun it wraps
the game in ``DistributedDataParallel`` as EGG does (on CPUs too, with gloo), and hands callbacks the
rank-averaged loss and the gathered interaction of the global batch.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from egg_zoo_discritune.engine.callbacks import Callback
from egg_zoo_discritune.engine.distributed import all_reduce_mean, world_size
from egg_zoo_discritune.engine.interaction import Interaction


def move_to(x: Any, device: torch.device) -> Any:
    """Moves tensors (recursively inside lists, tuples and dicts) to ``device``, as EGG's ``move_to``."""
    if hasattr(x, "to") and not isinstance(x, str):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return [move_to(i, device) for i in x]
    if isinstance(x, dict):
        return {k: move_to(v, device) for k, v in x.items()}
    return x


def unpack_batch(batch: Any, device: torch.device) -> list:
    """A loader item of 1-4 elements -> ``[sender_input, labels, receiver_input, aux_input]`` on ``device``."""
    items = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    if not 1 <= len(items) <= 4:
        raise ValueError(f"a batch must have 1 to 4 elements, got {len(items)}")
    items += [None] * (4 - len(items))
    return [move_to(x, device) for x in items]


class Trainer:
    def __init__(
        self,
        game: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train_data: Sequence,
        optimizer_scheduler: Optional[Any] = None,
        validation_data: Optional[Sequence] = None,
        device: Optional[torch.device] = None,
        callbacks: Optional[list[Callback]] = None,
        grad_norm: Optional[float] = None,
        aggregate_interaction_logs: bool = True,
        *,
        validation_freq: int = 1,
        update_freq: int = 1,
        fp16: bool = False,
    ):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.game = game.to(self.device)
        self.distributed = world_size() > 1
        if self.distributed:
            # As EGG: the optimizer keeps the unwrapped parameters; DDP averages their gradients.
            self.game = DistributedDataParallel(self.game, device_ids=[self.device] if self.device.type == "cuda"
                                                else None, find_unused_parameters=True)
        self.optimizer = optimizer
        self.optimizer_scheduler = optimizer_scheduler
        self.train_data = train_data
        self.validation_data = validation_data
        self.callbacks = list(callbacks or [])
        self.grad_norm = grad_norm
        self.aggregate_interaction_logs = aggregate_interaction_logs
        self.validation_freq = validation_freq
        self.update_freq = update_freq
        self.start_epoch = 0
        self.should_stop = False
        # fp16 autocast needs loss scaling; on CPU autocast is bf16-only, so fp16 is a CUDA feature here.
        self.fp16 = fp16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.fp16 else None

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.fp16 else nullcontext()

    def eval(self, data: Optional[Sequence] = None) -> tuple[float, Interaction]:
        data = self.validation_data if data is None else data
        total, n_batches, interactions = 0.0, 0, []
        self.game.eval()
        with torch.no_grad():
            for batch_id, batch in enumerate(data):
                loss, interaction = self.game(*unpack_batch(batch, self.device))
                loss, interaction = self._gather(loss, interaction)
                total += loss.item()
                n_batches += 1
                for callback in self.callbacks:
                    callback.on_batch_end(interaction, loss, batch_id, is_training=False)
                interactions.append(interaction)
        if n_batches == 0:
            raise ValueError("the evaluation data yielded no batch (is the split smaller than one batch?)")
        return total / n_batches, Interaction.from_iterable(interactions)

    def train_epoch(self) -> tuple[float, Interaction]:
        total, n_batches, interactions = 0.0, 0, []
        self.game.train()
        self.optimizer.zero_grad()
        for batch_id, batch in enumerate(self.train_data):
            with self._autocast():
                loss, interaction = self.game(*unpack_batch(batch, self.device))
            scaled = loss / self.update_freq if self.update_freq > 1 else loss
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            if batch_id % self.update_freq == self.update_freq - 1:
                self._step()
            logged, interaction = self._gather(scaled.detach(), interaction)
            total += logged.item()
            n_batches += 1
            for callback in self.callbacks:
                callback.on_batch_end(interaction, logged, batch_id)
            interactions.append(interaction)
        if self.optimizer_scheduler is not None:
            self.optimizer_scheduler.step()
        if n_batches == 0:
            raise ValueError("the training data yielded no batch (is the split smaller than one batch?)")
        return total / n_batches, Interaction.from_iterable(interactions)

    def _gather(self, loss: torch.Tensor, interaction: Interaction) -> tuple[torch.Tensor, Interaction]:
        """The loss averaged over ranks and the interaction of the global batch, on the CPU, for callbacks."""
        if self.distributed and self.aggregate_interaction_logs:
            interaction = interaction.gather_distributed_interactions()
        return all_reduce_mean(loss.detach()), interaction.to("cpu")

    def _step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.grad_norm:
            torch.nn.utils.clip_grad_norm_(self.game.parameters(), self.grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad()

    def train(self, n_epochs: int) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(self)
        for epoch in range(self.start_epoch, n_epochs):
            for callback in self.callbacks:
                callback.on_epoch_begin(epoch + 1)
            train_loss, train_interaction = self.train_epoch()
            for callback in self.callbacks:
                callback.on_epoch_end(train_loss, train_interaction, epoch + 1)
            test_loss = test_interaction = None
            if self.validation_data is not None and self.validation_freq > 0 and (epoch + 1) % self.validation_freq == 0:
                for callback in self.callbacks:
                    callback.on_validation_begin(epoch + 1)
                test_loss, test_interaction = self.eval()
                for callback in self.callbacks:
                    callback.on_validation_end(test_loss, test_interaction, epoch + 1)
            if self.should_stop:
                for callback in self.callbacks:
                    callback.on_early_stopping(train_loss, train_interaction, epoch + 1, test_loss, test_interaction)
                break
        for callback in self.callbacks:
            callback.on_train_end()
