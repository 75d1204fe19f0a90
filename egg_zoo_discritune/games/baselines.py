"""Baselines for the REINFORCE update: the EGG ones plus an exponential moving average, and the advantage."""

from __future__ import annotations

import torch
from torch import nn

from egg_zoo_discritune.engine.baselines import BuiltInBaseline, MeanBaseline, NoBaseline
from egg_zoo_discritune.engine.distributed import all_gather_rows, world_size


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


class GroupLeaveOneOutBaseline(nn.Module):
    """RLOO: with ``k`` captions sampled per image (consecutive rows), each caption's baseline is the mean
    reward of the other ``k - 1`` captions of the same image."""

    def __init__(self, k: int):
        super().__init__()
        if k < 2:
            raise ValueError("a group leave-one-out baseline needs at least 2 samples per image")
        self.k = k

    def predict(self, values: torch.Tensor) -> torch.Tensor:
        groups = values.view(-1, self.k)
        return ((groups.sum(dim=1, keepdim=True) - groups) / (self.k - 1)).view_as(values)

    def update(self, values: torch.Tensor) -> None:
        pass


def build_baseline(name: str, decay: float = 0.9, samples_per_image: int = 1) -> nn.Module:
    """``loo`` is leave-one-out over the other captions of the same image when several are sampled per
    image, and over the rest of the batch (EGG's ``BuiltInBaseline``) otherwise."""
    if name == "mean":
        return MeanBaseline()
    if name == "exponential":
        return ExponentialBaseline(decay)
    if name == "loo":
        return GroupLeaveOneOutBaseline(samples_per_image) if samples_per_image > 1 else BuiltInBaseline()
    if name == "none":
        return NoBaseline()
    raise ValueError(f"unknown baseline {name!r}; expected mean, exponential, loo or none")


def advantages(rewards: torch.Tensor, baseline: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """``rewards - baseline``, optionally standardised over the batch (mean 0, std 1)."""
    adv = rewards - baseline
    if normalize:
        adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    return adv


def global_advantages(baseline: nn.Module, rewards: torch.Tensor, normalize: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's baselines and advantages, computed over the global batch (every rank's rewards under
    torchrun), then the baseline's update; and this rank's share of the global batch, by which its loss is
    weighted so DDP's gradient mean is the global batch mean even when ranks hold different numbers."""
    everyone, first = all_gather_rows(rewards)
    predicted = baseline.predict(everyone)
    rows = slice(first, first + rewards.size(0))
    advantage = advantages(everyone, predicted, normalize)[rows]
    baseline.update(everyone)
    return predicted[rows], advantage, rewards.size(0) * world_size() / everyone.size(0)
