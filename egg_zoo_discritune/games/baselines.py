"""Baselines for the REINFORCE update: the EGG ones plus an exponential moving average, and the advantage."""

from __future__ import annotations

import torch
from torch import nn

from egg_zoo_discritune.engine.baselines import BuiltInBaseline, MeanBaseline, NoBaseline


class ExponentialBaseline(nn.Module):
    """Exponential moving average of the batch mean, started at the first batch's mean."""

    def __init__(self, decay: float = 0.9):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    def predict(self, values: torch.Tensor) -> torch.Tensor:
        if self.n_updates == 0:
            return values.detach().float().mean().to(values).expand_as(values)
        return self.mean.clone().to(values).expand_as(values)

    def update(self, values: torch.Tensor) -> None:
        batch_mean = values.detach().float().mean()
        self.mean.copy_(batch_mean if self.n_updates == 0 else self.decay * self.mean + (1 - self.decay) * batch_mean)
        self.n_updates += 1


BASELINES = {
    "mean": lambda decay: MeanBaseline(),
    "exponential": ExponentialBaseline,
    "loo": lambda decay: BuiltInBaseline(),
    "none": lambda decay: NoBaseline(),
}


def build_baseline(name: str, decay: float = 0.9) -> nn.Module:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    return BASELINES[name](decay)


def advantages(rewards: torch.Tensor, baseline: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """``rewards - baseline``, optionally standardised over the batch (mean 0, std 1)."""
    adv = rewards - baseline
    if normalize:
        adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    return adv
