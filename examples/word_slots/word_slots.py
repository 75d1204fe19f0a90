"""A complete DiscriTune sender in one file: one word per slot, each chosen from a small vocabulary by a
linear layer over the retriever's CLIP image features. ``pyproject.toml`` registers it as ``word-slots``."""
import torch
from torch import nn

WORDS = ["<end>", "a", "red", "green", "blue", "yellow", "circle", "square", "small", "big"]


class WordSlotSender(nn.Module):
    """The ``Captioner`` contract (egg_zoo_discritune/archs/contracts.py) in a few lines."""

    pad_id = 0  # "<end>" ends a caption and pads it
    reads_pixels = False  # it reads the retriever's image features
    image_processor = None
    export_file = "sender_finetuned.pt"

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

    def log_probs(self, features, tokens, lengths, temperature=1.0, entropy_grad=False):
        logp = (self.logits(features, tokens.size(1)) / temperature).log_softmax(-1)
        mask = torch.arange(tokens.size(1), device=tokens.device) < lengths[:, None]
        entropy = -(logp.exp() * logp).sum(-1)
        return logp.gather(-1, tokens[..., None])[..., 0] * mask, (entropy if entropy_grad else entropy.detach()) * mask

    def authors_log_prob(self, token_logp, tokens, lengths, max_new_tokens):  # --logprob_reduction authors
        return token_logp.sum(1) / lengths

    def decode(self, tokens, lengths):
        return [" ".join(WORDS[t] for t in row[:n] if t) for row, n in zip(tokens.tolist(), lengths.tolist())]

    def trainable_parameters(self):
        return list(self.parameters())

    def export(self):
        return self.state_dict()


def build(options, feature_dim):  # --sender word-slots: options = SenderOptions, feature_dim = image feature size
    return WordSlotSender(feature_dim)
