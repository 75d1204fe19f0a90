"""The teacher-forced pass over generated captions, whole or in micro-batches whose activations are
recomputed in the backward pass, so peak memory follows the chunk, not the batch; same loss, same
gradients (``torch.utils.checkpoint`` replays the RNG, so dropout masks repeat too)."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from egg_zoo_discritune.archs.contracts import Captioner


def teacher_forced(sender: Captioner, inputs: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                   temperature: float = 1.0, micro_batch: int = 0, entropy_grad: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``sender.log_probs`` of ``tokens``: per-token log-probs and entropies ``[B, T]``."""
    n = tokens.size(0)
    if not micro_batch or micro_batch >= n:
        return sender.log_probs(inputs, tokens, lengths, temperature, entropy_grad)
    chunks = []
    for start in range(0, n, micro_batch):
        part = slice(start, start + micro_batch)
        args = (inputs[part], tokens[part], lengths[part], temperature, entropy_grad)
        chunks.append(checkpoint(sender.log_probs, *args, use_reentrant=False) if torch.is_grad_enabled()
                      else sender.log_probs(*args))
    return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
