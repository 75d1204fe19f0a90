"""EGG-compatible ``Interaction`` and ``LoggingStrategy`` (same fields, names and semantics as egg.core)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch

from egg_zoo_discritune.engine.distributed import all_gather_rows
from egg_zoo_discritune.torch_files import load_torch_file


@dataclass
class LoggingStrategy:
    """Which fields of a game step are kept in the ``Interaction`` (``aux`` is always kept)."""

    store_sender_input: bool = True
    store_receiver_input: bool = True
    store_labels: bool = True
    store_aux_input: bool = True
    store_message: bool = True
    store_receiver_output: bool = True
    store_message_length: bool = True

    def filtered_interaction(
        self, sender_input, receiver_input, labels, aux_input, message, receiver_output, message_length, aux
    ) -> "Interaction":
        return Interaction(
            sender_input=sender_input if self.store_sender_input else None,
            receiver_input=receiver_input if self.store_receiver_input else None,
            labels=labels if self.store_labels else None,
            aux_input=aux_input if self.store_aux_input else None,
            message=message if self.store_message else None,
            receiver_output=receiver_output if self.store_receiver_output else None,
            message_length=message_length if self.store_message_length else None,
            aux=aux,
        )

    @classmethod
    def minimal(cls) -> "LoggingStrategy":
        return cls(*([False] * 7))

    @classmethod
    def maximal(cls) -> "LoggingStrategy":
        return cls()


def _cat(values: list) -> Optional[torch.Tensor]:
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise RuntimeError("Interaction field is None in some batches but not in others")
    return torch.cat(values, dim=0)


def _cat_dicts(dicts: list) -> Optional[dict]:
    if all(d is None for d in dicts):
        return None
    keys = set(dicts[0])
    if any(set(d) != keys for d in dicts):
        raise RuntimeError("Interaction dicts have different keys across batches")
    return {k: _cat([d[k] for d in dicts]) for k in keys}


@dataclass
class Interaction:
    """Everything one game step exposes to callbacks; tensors have the batch as first dimension."""

    sender_input: Optional[torch.Tensor]
    receiver_input: Optional[torch.Tensor]
    labels: Optional[torch.Tensor]
    aux_input: Optional[dict]
    message: Optional[torch.Tensor]
    receiver_output: Optional[torch.Tensor]
    message_length: Optional[torch.Tensor]
    aux: dict

    def __add__(self, other: "Interaction") -> "Interaction":
        return Interaction.from_iterable([self, other])

    @property
    def size(self) -> int:
        for field in (self.sender_input, self.receiver_input, self.labels, self.message,
                      self.receiver_output, self.message_length):
            if field is not None:
                return field.size(0)
        raise RuntimeError("Interaction has no field with a batch dimension")

    def to(self, *args, **kwargs) -> "Interaction":
        def move(x):
            return x.to(*args, **kwargs) if isinstance(x, torch.Tensor) else x

        for name in ("sender_input", "receiver_input", "labels", "message", "receiver_output", "message_length"):
            setattr(self, name, move(getattr(self, name)))
        if self.aux_input is not None:
            self.aux_input = {k: move(v) for k, v in self.aux_input.items()}
        self.aux = {k: move(v) for k, v in self.aux.items()}
        return self

    @staticmethod
    def from_iterable(interactions: Iterable["Interaction"]) -> "Interaction":
        interactions = list(interactions)
        return Interaction(
            sender_input=_cat([x.sender_input for x in interactions]),
            receiver_input=_cat([x.receiver_input for x in interactions]),
            labels=_cat([x.labels for x in interactions]),
            aux_input=_cat_dicts([x.aux_input for x in interactions]),
            message=_cat([x.message for x in interactions]),
            receiver_output=_cat([x.receiver_output for x in interactions]),
            message_length=_cat([x.message_length for x in interactions]),
            aux=_cat_dicts([x.aux for x in interactions]) or {},
        )

    def gather_distributed_interactions(self) -> "Interaction":
        """Every rank's interaction concatenated in rank order (EGG's method of the same name; here ranks
        may hold different batch sizes). Every rank must call it."""
        def gather(x):
            return all_gather_rows(x)[0] if isinstance(x, torch.Tensor) else x

        fields = {name: gather(getattr(self, name)) for name in
                  ("sender_input", "receiver_input", "labels", "message", "receiver_output", "message_length")}
        aux_input = {k: gather(v) for k, v in self.aux_input.items()} if self.aux_input is not None else None
        return Interaction(**fields, aux_input=aux_input, aux={k: gather(v) for k, v in self.aux.items()})

    @staticmethod
    def empty() -> "Interaction":
        return Interaction(None, None, None, {}, None, None, None, {})


def load_interactions(path: str | Path) -> Interaction:
    """An interaction file written by ``InteractionSaver`` (EGG's or the built-in one), read with
    ``weights_only=True``: only the two Interaction classes are allowed besides tensors (EGG's own
    ``egg.core.util.load_interactions`` calls ``torch.load`` in a way torch >= 2.6 refuses)."""
    allowed = [Interaction]
    try:
        from egg.core.interaction import Interaction as EggInteraction
        allowed.append(EggInteraction)
    except ImportError:
        pass
    return load_torch_file(Path(path), "an interaction file", allowed)
