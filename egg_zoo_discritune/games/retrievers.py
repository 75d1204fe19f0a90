"""The receiver: one or more frozen retrievers, and which of them rewards a batch.

With several (``--receiver a,b``), each training batch is rewarded by the next one in turn
(``alternate``: only that one encodes the images) or by the mean of all (``average``). Evaluation
scores with every one: the first one's reward and P@1, and each one's P@1 as ``acc_<i>``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from egg_zoo_discritune.archs.contracts import Retriever
from egg_zoo_discritune.engine.distributed import all_gather_rows
from egg_zoo_discritune.games.rewards import retrieval_accuracy

Reward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Retrievers(nn.Module):
    def __init__(self, retrievers: Sequence[Retriever], mode: str = "alternate"):
        super().__init__()
        if not retrievers:
            raise ValueError("the game needs at least one retriever")
        self.members = nn.ModuleList(retrievers)
        self.mode = mode

    @property
    def first(self) -> Retriever:
        return self.members[0]

    def __len__(self) -> int:
        return len(self.members)

    def rewarding(self, update: int) -> list[int]:
        """The retrievers that score this batch (``update``: the number of training updates so far)."""
        if self.training and self.mode == "alternate":
            return [update % len(self)]
        return list(range(len(self)))

    def encode(self, images: torch.Tensor, which: Iterable[int]) -> dict[int, torch.Tensor]:
        """Image features of the retrievers in ``which``. ``images`` are pixels ``[B, 3, H, W]``, or the
        first retriever's cached features ``[B, D]`` (then only the first one can be used)."""
        which = sorted(set(which))
        if images.dim() == 2:
            if which != [0]:
                raise ValueError("a feature cache holds one retriever's features: several retrievers or a sender "
                                 "with its own --sender_clip need the images")
            return {0: images.float()}
        return {i: self.members[i].encode_images(images) for i in which}

    @torch.no_grad()
    def rewards(self, texts: list[str], features: dict[int, torch.Tensor], which: list[int], reward: Reward,
                k: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """The reward of each caption (``k`` consecutive captions per image), the retrieval accuracies
        (``acc``: the rewarding retriever's in training, the first one's in evaluation, where several also
        give ``acc_<i>`` each), and the number of candidate images (of every rank under torchrun)."""
        rewards, accuracy = [], {}
        for i in which:
            candidates, offset = all_gather_rows(features[i].float())
            retriever = self.members[i]
            scores = retriever.score(retriever.encode_texts(texts), candidates)
            targets = torch.arange(offset, offset + features[i].size(0), device=scores.device).repeat_interleave(k)
            rewards.append(reward(scores, targets))
            accuracy[f"acc_{i}"] = retrieval_accuracy(scores, targets)
        if not self.training:
            return rewards[0], {"acc": accuracy["acc_0"], **(accuracy if len(self) > 1 else {})}, candidates.size(0)
        return torch.stack(rewards).mean(0), {"acc": accuracy[f"acc_{which[0]}"]}, candidates.size(0)
