"""A reward shaper: the KL penalty to the initial captioner (``--kl_coeff``).

Each caption's reward loses ``coeff`` x the sampled-token estimate of KL(policy || initial captioner),
``sum_t log p(c_t) - log p_0(c_t)``. The initial captioner is a frozen copy kept in eval mode.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from egg_zoo_discritune.archs.contracts import Captioner
from egg_zoo_discritune.games.teacher_forcing import teacher_forced


class KLPenalty(nn.Module):
    def __init__(self, sender: Captioner, coeff: float, micro_batch: int = 0):
        super().__init__()
        self.reference = copy.deepcopy(sender).requires_grad_(False).eval()
        self.coeff = coeff
        self.micro_batch = micro_batch

    def train(self, mode: bool = True) -> "KLPenalty":
        return super().train(False)

    @torch.no_grad()
    def forward(self, reward: torch.Tensor, token_logp: torch.Tensor, inputs: torch.Tensor, tokens: torch.Tensor,
                lengths: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(the shaped reward, the KL estimate of each caption)."""
        reference, _ = teacher_forced(self.reference, inputs, tokens, lengths, temperature, self.micro_batch)
        kl = (token_logp.detach() - reference).sum(1)
        return reward - self.coeff * kl, kl
