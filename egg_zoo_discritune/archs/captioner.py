"""What the token-level captioners with a Hugging Face language model (ClipCap, BLIP) share: the
tokenizer, dropout in training, trainable parameters, decoding and the authors' log-prob normalisation."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


class LanguageModelCaptioner(nn.Module):
    """Base of the built-in ``Captioner``s. ``language_model`` is the part the RL update trains; with
    ``dropout`` it runs in train mode while the captioner trains (generation and teacher-forced pass
    alike, as the authors' code), otherwise always in eval mode. Frozen parts stay in eval mode."""

    reads_pixels = False
    image_processor = None

    def __init__(self, tokenizer: PreTrainedTokenizerBase, dropout: bool):
        super().__init__()
        self.tokenizer = tokenizer
        self.dropout = dropout

    def language_model(self) -> nn.Module:
        raise NotImplementedError

    def train(self, mode: bool = True) -> "LanguageModelCaptioner":
        super().train(False)
        self.training = mode
        self.language_model().train(mode and self.dropout)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        rows = [row[:n].tolist() for row, n in zip(tokens, lengths)]
        return [t.strip() for t in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def authors_log_prob(self, token_logp: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                         max_new_tokens: int) -> torch.Tensor:
        """The mean over the caption's tokens, its end token included (the authors' BLIP)."""
        return token_logp.sum(1) / lengths
