"""A complete DiscriTune sender in one file: one word per slot, each chosen from a small vocabulary by a
linear layer over the retriever's CLIP image features. ``pyproject.toml`` registers it as ``word-slots``."""
import torch
from torch import nn

WORDS = ["<end>", "a", "red", "green", "blue", "yellow", "circle", "square", "small", "big"]


class WordSlotSender(nn.Module):
    pad_id = 0  # "<end>" ends a caption and pads it

    def __init__(self, feature_dim: int, slots: int = 6):
        super().__init__()
        self.slots, self.head = slots, nn.Linear(feature_dim, slots * len(WORDS))

    def logits(self, features: torch.Tensor, n: int) -> torch.Tensor:  # [B, n, vocabulary]
        return self.head(features.float()).view(len(features), self.slots, len(WORDS))[:, :n]

    @torch.no_grad()
    def generate(self, features, mode="greedy", max_new_tokens=40, num_beams=1, temperature=1.0):
        logits = self.logits(features, max_new_tokens)
        sample = torch.distributions.Categorical(logits=logits / temperature).sample
        tokens = sample() if mode == "sample" else logits.argmax(-1)
        ended = tokens == self.pad_id
        lengths = torch.where(ended.any(1), ended.int().argmax(1) + 1, tokens.size(1))
        return tokens, lengths

    def log_probs(self, features, tokens, lengths, temperature=1.0):
        logp = (self.logits(features, tokens.size(1)) / temperature).log_softmax(-1)
        mask = torch.arange(tokens.size(1), device=tokens.device) < lengths[:, None]
        return logp.gather(-1, tokens[..., None])[..., 0] * mask, -(logp.exp() * logp).sum(-1) * mask

    def decode(self, tokens, lengths):
        return [" ".join(WORDS[t] for t in row[:n] if t) for row, n in zip(tokens.tolist(), lengths.tolist())]

    def trainable_parameters(self):
        return list(self.parameters())


def build(options, encoder):  # --sender word-slots: options = SenderOptions, encoder = the CLIP retriever
    return WordSlotSender(encoder.model.config.projection_dim)
