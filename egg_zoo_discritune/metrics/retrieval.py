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


def block_ranks(text_features: torch.Tensor, image_features: torch.Tensor, score: Scorer,
                block_size: int = 100) -> torch.Tensor:
    """Each caption's rank of its own image among its block (1: retrieved; images scored strictly higher,
    plus one, so ties count for the target, as in the game's accuracy); 0 in the dropped last block."""
    if block_size < 2:
        raise ValueError(f"P@1 blocks of {block_size}: a block needs the target and at least one distractor")
    n = text_features.size(0)
    if n // block_size == 0:
        raise ValueError(f"{n} images: fewer than one block of {block_size} candidates")
    ranks = torch.zeros(n, dtype=torch.long)
    for start in range(0, n - block_size + 1, block_size):
        block = slice(start, start + block_size)
        scores = score(text_features[block], image_features[block])
        ranks[block] = 1 + (scores > scores.diagonal().unsqueeze(1)).sum(dim=1).cpu()
    return ranks


def p_at_1_of_ranks(ranks: torch.Tensor, block_size: int) -> dict:
    n_blocks = ranks.size(0) // block_size
    return {"p_at_1": int((ranks == 1).sum()) / (n_blocks * block_size), "n_blocks": n_blocks,
            "n_dropped": int((ranks == 0).sum())}


def precision_at_1(text_features: torch.Tensor, image_features: torch.Tensor, score: Scorer,
                   block_size: int = 100) -> dict:
    return p_at_1_of_ranks(block_ranks(text_features, image_features, score, block_size), block_size)


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
