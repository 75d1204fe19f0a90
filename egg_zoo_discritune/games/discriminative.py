"""The discriminative game: the captioner describes each image of a batch, the frozen retriever picks
the described image among all images of the batch, and the captioner is updated with REINFORCE.

EGG contract: ``forward(sender_input, labels, receiver_input=None, aux_input=None) -> (loss, Interaction)``;
everything in the Interaction is a tensor with the batch first (captions as token ids padded to
``max_len``), so EGG's ``Interaction.from_iterable`` and distributed gathering work unchanged.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from egg_zoo_discritune.engine.distributed import all_gather_rows, world_size
from egg_zoo_discritune.games.baselines import advantages
from egg_zoo_discritune.games.rewards import REWARDS, retrieval_accuracy

LOGPROB_REDUCTIONS = ("sum", "mean")
RECEIVER_MODES = ("alternate", "average")


def policy_gradient_loss(seq_logp: torch.Tensor, advantage: torch.Tensor, entropy: torch.Tensor,
                         entropy_coeff: float = 0.0) -> torch.Tensor:
    """REINFORCE: ``-mean(A * log p(caption)) - entropy_coeff * mean(H)``; ``A`` carries no gradient."""
    return -(advantage.detach() * seq_logp).mean() - entropy_coeff * entropy.mean()


class DiscriminativeGame(nn.Module):
    def __init__(
        self,
        sender: nn.Module,
        receiver: nn.Module,
        baseline: nn.Module,
        logging_strategy: Any,
        *,
        reward: str = "discriminative",
        normalize_advantage: bool = False,
        logprob_reduction: str = "sum",
        entropy_coeff: float = 0.0,
        train_decoding: str = "greedy",
        test_decoding: str = "beam",
        temperature: float = 1.0,
        beam_size: int = 5,
        max_len: int = 40,
        sender_image_encoder: Optional[nn.Module] = None,
        samples_per_image: int = 1,
        kl_coeff: float = 0.0,
        autocast_dtype: Optional[torch.dtype] = None,
        micro_batch: int = 0,
        other_receivers: Sequence[nn.Module] = (),
        receiver_mode: str = "alternate",
    ):
        super().__init__()
        if samples_per_image > 1 and train_decoding != "sample":
            raise ValueError("several captions per image need --train_decoding sample (greedy ones are identical)")
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; expected one of {sorted(REWARDS)}")
        if receiver_mode not in RECEIVER_MODES:
            raise ValueError(f"unknown receiver mode {receiver_mode!r}; expected one of {RECEIVER_MODES}")
        if logprob_reduction not in LOGPROB_REDUCTIONS:
            raise ValueError(f"unknown log-prob reduction {logprob_reduction!r}; expected one of {LOGPROB_REDUCTIONS}")
        self.sender = sender
        self.receiver = receiver
        # More frozen retrievers (--receiver a,b): rewards alternate between them per batch or are averaged.
        self.other_receivers = nn.ModuleList(other_receivers)
        self.receiver_mode = receiver_mode
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.baseline = baseline
        # None: the sender's prefix reads the retriever's image features (same CLIP, one pass per image).
        self.sender_image_encoder = sender_image_encoder
        self.logging_strategy = logging_strategy
        self.reward_fn = REWARDS[reward]
        self.normalize_advantage = normalize_advantage
        self.logprob_reduction = logprob_reduction
        self.entropy_coeff = entropy_coeff
        self.train_decoding = train_decoding
        self.test_decoding = test_decoding
        self.temperature = temperature
        self.beam_size = beam_size
        self.max_len = max_len
        self.samples_per_image = samples_per_image
        self.kl_coeff = kl_coeff
        # bf16 autocast of every network in the step (weights stay fp32); fp16 is the trainer's (EGG's --fp16).
        self.autocast_dtype = autocast_dtype
        self.micro_batch = micro_batch
        # A frozen copy of the initial captioner, kept only when the KL penalty is on.
        self.reference = copy.deepcopy(sender).requires_grad_(False) if kl_coeff > 0 else None

    @property
    def receivers(self) -> list[nn.Module]:
        return [self.receiver, *self.other_receivers]

    def inputs(self, sender_input: torch.Tensor, receiver_input: Optional[torch.Tensor]
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(what the sender reads, each retriever's image features). The retrievers read ``receiver_input``
        (pixels ``[B, 3, H, W]`` or the first retriever's cached features ``[B, D]``), or ``sender_input``
        when the batch has none. A ClipCap reads the first retriever's features (or its own CLIP's); a
        sender with ``reads_pixels`` reads ``sender_input``, its own preprocessing of the images."""
        images = receiver_input if receiver_input is not None else sender_input
        if images.dim() == 2:
            if self.other_receivers or (self.sender_image_encoder is not None and receiver_input is None):
                raise ValueError("a feature cache holds one retriever's features: several retrievers or a sender "
                                 "with its own --sender_clip need the images")
            features = [images.float()]
        else:
            features = [receiver.encode_images(images) for receiver in self.receivers]
        if getattr(self.sender, "reads_pixels", False):
            if receiver_input is None:
                raise ValueError("this sender reads its own pixels: batches must carry the retriever's input too")
            return sender_input, features
        if self.sender_image_encoder is not None:
            return self.sender_image_encoder.encode_images(sender_input), features
        return features[0], features

    def teacher_forced(self, sender: nn.Module, features: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                       temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``sender.log_probs`` over the whole batch, or in chunks of ``micro_batch`` captions whose
        activations are recomputed in the backward pass, so peak memory follows the chunk, not the batch."""
        n = tokens.size(0)
        if not self.micro_batch or self.micro_batch >= n:
            return sender.log_probs(features, tokens, lengths, temperature)
        chunks = []
        for start in range(0, n, self.micro_batch):
            part = slice(start, start + self.micro_batch)
            args = (features[part], tokens[part], lengths[part], temperature)
            chunks.append(checkpoint(sender.log_probs, *args, use_reentrant=False) if torch.is_grad_enabled()
                          else sender.log_probs(*args))
        return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])

    def forward(self, sender_input: torch.Tensor, labels: Optional[torch.Tensor] = None,
                receiver_input: Any = None, aux_input: Optional[dict] = None):
        with torch.autocast(sender_input.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            return self._play(sender_input, labels, receiver_input)

    def _scores(self, texts: list[str], features: list[torch.Tensor], k: int) -> tuple[torch.Tensor, dict, int]:
        """The reward of each caption, the retrieval accuracies (``acc``: the rewarding retriever's in
        training, the first one's in evaluation; ``acc_<i>``: retriever i's, in evaluation), and the
        number of candidate images (of every process)."""
        if self.training and self.receiver_mode == "alternate":
            scored = [int(self.updates) % len(self.receivers)]
        else:
            scored = range(len(self.receivers))
        rewards, accuracy = [], {}
        for i in scored:
            # Under torchrun the distractors are the images of every rank: the same game as one process.
            candidates, offset = all_gather_rows(features[i].float())
            receiver = self.receivers[i]
            scores = receiver.score(receiver.encode_texts(texts), candidates)
            targets = torch.arange(offset, offset + features[i].size(0), device=scores.device).repeat_interleave(k)
            rewards.append(self.reward_fn(scores, targets))
            accuracy[f"acc_{i}"] = retrieval_accuracy(scores, targets)
        if self.training:
            return torch.stack(rewards).mean(0), {"acc": accuracy[f"acc_{scored[0]}"]}, candidates.size(0)
        # Evaluation: the reward and P@1 of the first retriever; every retriever's P@1 besides.
        return rewards[0], {"acc": accuracy["acc_0"], **(accuracy if len(self.receivers) > 1 else {})}, \
            candidates.size(0)

    def _play(self, sender_input: torch.Tensor, labels: Optional[torch.Tensor], receiver_input: Any):
        sender_in, features = self.inputs(sender_input, receiver_input)
        mode = self.train_decoding if self.training else self.test_decoding
        # k captions per image in training: rows k*i .. k*i+k-1 describe image i.
        k = self.samples_per_image if self.training else 1
        sender_in = sender_in.repeat_interleave(k, dim=0)
        tokens, lengths = self.sender.generate(sender_in, mode=mode, max_new_tokens=self.max_len,
                                               num_beams=self.beam_size, temperature=self.temperature)
        with torch.no_grad():
            reward, accuracy, n_candidates = self._scores(self.sender.decode(tokens, lengths), features, k)
        if not torch.isfinite(reward).all():
            raise FloatingPointError(f"non-finite reward in this batch: {reward.tolist()}")
        n_images = features[0].size(0)
        aux = {**accuracy, "reward": reward, "length": lengths.float()}
        if self.training:
            temperature = self.temperature if mode == "sample" else 1.0
            token_logp, token_entropy = self.teacher_forced(self.sender, sender_in, tokens, lengths, temperature)
            seq_logp = token_logp.sum(1)
            if self.logprob_reduction == "mean":
                seq_logp = seq_logp / lengths
            entropy = token_entropy.sum(1) / lengths
            shaped = reward
            if self.reference is not None:
                with torch.no_grad():
                    reference_logp, _ = self.teacher_forced(self.reference, sender_in, tokens, lengths, temperature)
                # Sampled-token estimate of KL(policy || initial captioner) for each caption.
                kl = (token_logp.detach() - reference_logp).sum(1)
                shaped = reward - self.kl_coeff * kl
                aux["kl"] = kl
            # Baseline and advantage normalisation see the global batch; then this rank's rows.
            all_shaped, first = all_gather_rows(shaped)
            all_baseline = self.baseline.predict(all_shaped)
            rows = slice(first, first + shaped.size(0))
            baseline = all_baseline[rows]
            advantage = advantages(all_shaped, all_baseline, self.normalize_advantage)[rows]
            loss = policy_gradient_loss(seq_logp, advantage, entropy, self.entropy_coeff)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()}: log-probs {seq_logp.tolist()}")
            self.baseline.update(all_shaped)
            self.updates += 1
            aux.update(baseline=baseline.detach(), logp=seq_logp.detach(), entropy=entropy.detach())
            # DDP averages gradients over ranks; weighting by this rank's share of the global batch makes
            # that average the global batch mean even when ranks hold different numbers of images.
            loss = loss * (shaped.size(0) * world_size() / all_shaped.size(0))
        else:
            loss = -reward.mean() * (n_images * world_size() / n_candidates)
        message = F.pad(tokens, (0, self.max_len - tokens.size(1)), value=self.sender.pad_id)
        if labels is None:
            labels = torch.arange(n_images, device=tokens.device)
        labels = labels.repeat_interleave(k)
        interaction = self.logging_strategy.filtered_interaction(
            sender_input=None, receiver_input=None, labels=labels, aux_input=None, message=message,
            receiver_output=None, message_length=lengths, aux=aux,
        )
        return loss, interaction

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and the baseline's state; frozen weights are rebuilt from their files."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items()
                if k in trainable or k.startswith("baseline.") or k == "updates"}

    def load_checkpoint_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        expected = set(self.checkpoint_state_dict())
        not_loaded = expected & set(missing)
        if unexpected or not_loaded:
            raise ValueError(f"checkpoint does not match this game: missing {sorted(not_loaded)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]} (was it made with other trainable parts?)")
