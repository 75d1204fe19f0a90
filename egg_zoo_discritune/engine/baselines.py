"""EGG's REINFORCE baselines (``NoBaseline``, ``MeanBaseline``, ``BuiltInBaseline``), same semantics.

Unlike EGG's, these are modules whose state lives in buffers, so it is saved in checkpoints and a
resumed run continues with the same baseline.
"""

from __future__ import annotations

import torch
from torch import nn


class NoBaseline(nn.Module):
    def predict(self, values: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(values)

    def update(self, values: torch.Tensor) -> None:
        pass


class MeanBaseline(nn.Module):
    """Running mean of the batch means of every update so far (EGG's ``MeanBaseline``)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    def predict(self, values: torch.Tensor) -> torch.Tensor:
        return self.mean.clone().to(values).expand_as(values)

    def update(self, values: torch.Tensor) -> None:
        self.n_updates += 1
        self.mean += (values.detach().float().mean() - self.mean) / self.n_updates


class BuiltInBaseline(nn.Module):
    """Leave-one-out: each sample's baseline is the mean of the other samples of the batch."""

    def predict(self, values: torch.Tensor) -> torch.Tensor:
        n = values.numel()
        if n < 2:
            return torch.zeros_like(values)
        return (values.sum() - values) / (n - 1)

    def update(self, values: torch.Tensor) -> None:
        pass
