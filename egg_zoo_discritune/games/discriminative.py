"""The discriminative game: the captioner describes each image of a batch, the frozen retriever picks
the described image among all images of the batch, and the captioner is updated with REINFORCE.

EGG contract: ``forward(sender_input, labels, receiver_input=None, aux_input=None) -> (loss, Interaction)``;
everything in the Interaction is a tensor with the batch first (captions as token ids padded to
``max_len``), so EGG's ``Interaction.from_iterable`` and distributed gathering work unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from egg_zoo_discritune.archs.contracts import Captioner, Retriever
from egg_zoo_discritune.engine.distributed import world_size
from egg_zoo_discritune.games.baselines import global_advantages
from egg_zoo_discritune.games.kl import KLPenalty
from egg_zoo_discritune.games.options import GameOptions
from egg_zoo_discritune.games.retrievers import Retrievers
from egg_zoo_discritune.games.rewards import REWARDS
from egg_zoo_discritune.games.teacher_forcing import teacher_forced


def caption_log_prob(sender: Captioner, reduction: str, token_logp: torch.Tensor, tokens: torch.Tensor,
                     lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``log p(caption)`` from its token log-probs: their sum, their mean, or the authors' normalisation."""
    if reduction == "sum":
        return token_logp.sum(1)
    if reduction == "mean":
        return token_logp.sum(1) / lengths
    return sender.authors_log_prob(token_logp, tokens, lengths, max_len)


def policy_gradient_loss(logp: torch.Tensor, advantage: torch.Tensor, entropy: torch.Tensor,
                         entropy_coeff: float = 0.0) -> torch.Tensor:
    """REINFORCE: ``-mean(A * log p(caption)) - entropy_coeff * mean(H)``; ``A`` carries no gradient."""
    return -(advantage.detach() * logp).mean() - entropy_coeff * entropy.mean()


class DiscriminativeGame(nn.Module):
    """``sender``: the captioner; ``receiver``: the frozen retrievers; ``sender_image_encoder``: the CLIP
    giving the sender's image features when they are not the first retriever's (None: shared, one image
    pass); ``autocast_dtype``: bf16 autocast of the whole step with fp32 weights (fp16 is EGG's --fp16)."""

    def __init__(self, sender: Captioner, receiver: Retrievers, baseline: nn.Module, logging_strategy: Any,
                 options: Optional[GameOptions] = None, sender_image_encoder: Optional[Retriever] = None,
                 autocast_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.sender = sender
        self.receiver = receiver
        self.baseline = baseline
        self.logging_strategy = logging_strategy
        self.options = options = options or GameOptions()
        self.sender_image_encoder = sender_image_encoder
        self.autocast_dtype = autocast_dtype
        self.reward_fn = REWARDS[options.reward]
        self.kl_penalty = KLPenalty(sender, options.kl_coeff, options.micro_batch) if options.kl_coeff > 0 else None
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, sender_input: torch.Tensor, labels: Optional[torch.Tensor] = None,
                receiver_input: Optional[torch.Tensor] = None, aux_input: Optional[dict] = None):
        with torch.autocast(sender_input.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            return self._step(sender_input, labels, receiver_input)

    def _step(self, sender_input, labels, receiver_input):
        o, training = self.options, self.training
        k = o.samples_per_image if training else 1  # rows k*i .. k*i+k-1 describe image i
        rewarding = self.receiver.rewarding(int(self.updates))
        features = self.receiver.encode(sender_input if receiver_input is None else receiver_input,
                                        rewarding + ([0] if self._reads_first_features() else []))
        inputs = self._sender_inputs(sender_input, receiver_input, features).repeat_interleave(k, dim=0)
        mode = o.train_decoding if training else o.test_decoding
        tokens, lengths = self.sender.generate(inputs, mode=mode, max_new_tokens=o.max_len, num_beams=o.beam_size,
                                               temperature=o.temperature)
        reward, aux, n_candidates = self.receiver.rewards(self.sender.decode(tokens, lengths), features, rewarding,
                                                          self.reward_fn, k)
        if not torch.isfinite(reward).all():
            raise FloatingPointError(f"non-finite reward in this batch: {reward.tolist()}")
        aux.update(reward=reward, length=lengths.float())
        n_images = inputs.size(0) // k
        if not training:
            loss = -reward.mean() * (n_images * world_size() / n_candidates)
            return loss, self._interaction(tokens, lengths, labels, k, aux)

        temperature = o.temperature if mode == "sample" else 1.0
        token_logp, token_entropy = teacher_forced(self.sender, inputs, tokens, lengths, temperature, o.micro_batch,
                                                   entropy_grad=o.entropy_coeff > 0)
        logp = caption_log_prob(self.sender, o.logprob_reduction, token_logp, tokens, lengths, o.max_len)
        entropy = token_entropy.sum(1) / lengths
        if self.kl_penalty is not None:
            reward, aux["kl"] = self.kl_penalty(reward, token_logp, inputs, tokens, lengths, temperature)
        baseline, advantage, share = global_advantages(self.baseline, reward, o.normalize_advantage)
        loss = share * policy_gradient_loss(logp, advantage, entropy, o.entropy_coeff)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()}: log-probs {logp.tolist()}")
        self.updates += 1
        aux.update(baseline=baseline.detach(), logp=logp.detach(), entropy=entropy.detach())
        return loss, self._interaction(tokens, lengths, labels, k, aux)

    def _reads_first_features(self) -> bool:
        return not self.sender.reads_pixels and self.sender_image_encoder is None

    def _sender_inputs(self, sender_input: torch.Tensor, receiver_input: Optional[torch.Tensor],
                       features: dict[int, torch.Tensor]) -> torch.Tensor:
        """What the sender reads: its own pixels (``sender_input``, when it ``reads_pixels``; the retrievers
        then read ``receiver_input``), its own CLIP's features, or the first retriever's features."""
        if self.sender.reads_pixels:
            if receiver_input is None:
                raise ValueError("this sender reads its own pixels: batches must carry the retriever's input too")
            return sender_input
        if self.sender_image_encoder is not None:
            if sender_input.dim() == 2:
                raise ValueError("a feature cache holds the retriever's features: a sender with its own "
                                 "--sender_clip needs the images")
            return self.sender_image_encoder.encode_images(sender_input)
        return features[0]

    def _interaction(self, tokens, lengths, labels, k, aux):
        message = F.pad(tokens, (0, self.options.max_len - tokens.size(1)), value=self.sender.pad_id)
        if labels is None:
            labels = torch.arange(tokens.size(0) // k, device=tokens.device)
        return self.logging_strategy.filtered_interaction(
            sender_input=None, receiver_input=None, labels=labels.repeat_interleave(k), aux_input=None,
            message=message, receiver_output=None, message_length=lengths, aux=aux,
        )

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and the baseline's state; frozen weights are rebuilt from their files."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items()
                if k in trainable or k.startswith("baseline.") or k == "updates"}

    def load_checkpoint_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shapes differ: torch lists each one on its own line
            mismatches = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
            raise ValueError(f"a checkpoint of another model size ({len(mismatches)} tensors differ, first: "
                             f"{mismatches[0] if mismatches else err})") from None
        expected = set(self.checkpoint_state_dict())
        not_loaded = expected & set(missing)
        if unexpected or not_loaded:
            raise ValueError(f"checkpoint does not match this game: missing {sorted(not_loaded)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]} (was it made with other trainable parts?)")
