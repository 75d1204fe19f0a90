"""Retrieval metrics of captions against their images.

P@1 follows the authors' protocol: the test set, in file order and unshuffled, is cut into consecutive
blocks of ``block_size`` (100) images; each caption must retrieve its own image among its block. The
incomplete last block is dropped (``n_dropped`` says how many images). Recall@k ranks each caption's
image among all images of the test set.
"""

from __future__ import annotations

from typing import Callable

import torch

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def precision_at_1(text_features: torch.Tensor, image_features: torch.Tensor, score: Scorer,
                   block_size: int = 100) -> dict:
    if block_size < 2:
        raise ValueError(f"P@1 blocks of {block_size}: a block needs the target and at least one distractor")
    n = text_features.size(0)
    n_blocks = n // block_size
    if n_blocks == 0:
        raise ValueError(f"{n} images: fewer than one block of {block_size} candidates")
    hits = 0
    for b in range(n_blocks):
        block = slice(b * block_size, (b + 1) * block_size)
        scores = score(text_features[block], image_features[block])
        target = scores.diagonal()
        # Ties count for the target, as in the game's accuracy.
        hits += int((target >= scores.max(dim=1).values).sum())
    return {"p_at_1": hits / (n_blocks * block_size), "n_blocks": n_blocks, "n_dropped": n - n_blocks * block_size}


def recall_at_k(text_features: torch.Tensor, image_features: torch.Tensor, score: Scorer,
                ks: tuple[int, ...] = (1, 5), chunk: int = 1024) -> dict:
    """Share of captions whose image ranks in the top k of the whole set (rank = images scored strictly higher)."""
    ranks = []
    for start in range(0, text_features.size(0), chunk):
        scores = score(text_features[start:start + chunk], image_features)
        rows = torch.arange(scores.size(0))
        target = scores[rows, rows + start]
        ranks.append((scores > target.unsqueeze(1)).sum(dim=1))
    rank = torch.cat(ranks)
    return {f"recall_at_{k}": (rank < k).float().mean().item() for k in ks}
