"""Rewards of the discriminative game, per caption, from the retriever's score matrix.

``scores[i, j]`` is the retriever's match between caption ``i`` and candidate image ``j``;
``targets[i]`` is the column of caption ``i``'s own image.
"""

from __future__ import annotations

import torch


def target_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return scores.gather(1, targets.unsqueeze(1)).squeeze(1)


def retrieval_accuracy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 where the target ranks first (ties count for the target, as in the authors' code), else 0."""
    return (target_scores(scores, targets) >= scores.max(dim=1).values).float()


def discriminative_reward(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The paper's reward: log-probability the retriever gives the target, ``log softmax_j(scores)[target]``."""
    return target_scores(scores.float().log_softmax(dim=1), targets)


def similarity_reward(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The caption's match with its own image alone (CLIPScore-like with ``--similarity cosine``)."""
    return target_scores(scores.float(), targets)


REWARDS = {
    "discriminative": discriminative_reward,
    "accuracy": retrieval_accuracy,
    "similarity": similarity_reward,
}
