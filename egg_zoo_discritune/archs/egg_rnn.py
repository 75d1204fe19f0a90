"""An emergent-language agent as the sender: EGG's own ``RnnSenderReinforce`` over a small vocabulary,
so the same game is played by an agent learning from scratch instead of a pretrained captioner.

EGG's wrapper samples ``max_len`` symbols in training (the argmax in evaluation), then appends EOS
(symbol 0), so its messages are ``max_len + 1`` long. Its
symbols are rendered as words (symbol ``i`` -> ``words[i - 1]``) for the CLIP retriever to read.
EGG senders have no beam search: "beam" decodes greedily. ``log_probs`` re-runs EGG's own modules
(agent, cells, ``hidden_to_output``, ``embedding``, ``sos_embedding``) with the given symbols as inputs.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import nn

from egg_zoo_discritune.archs.decoding import caption_lengths, token_log_probs
from egg_zoo_discritune.archs.weights import cpu_state_dict


class FeatureAgent(nn.Module):
    """EGG's agent interface (``forward(x, aux_input)``): the RNN's first hidden state from CLIP features."""

    def __init__(self, feature_dim: int, hidden_size: int):
        super().__init__()
        self.fc = nn.Linear(feature_dim, hidden_size)

    def forward(self, x: torch.Tensor, aux_input=None) -> torch.Tensor:
        return self.fc(x)


class EggRnnSender(nn.Module):
    def __init__(self, rnn_sender: nn.Module, words: list[str]):
        super().__init__()
        if rnn_sender.vocab_size != len(words) + 1:
            raise ValueError(f"{rnn_sender.vocab_size} symbols (EOS included) for {len(words)} words")
        self.rnn = rnn_sender
        self.words = list(words)

    pad_id = 0  # EGG's EOS
    reads_pixels = False
    image_processor = None
    export_file = "sender_finetuned.pt"

    def export(self) -> dict[str, torch.Tensor]:
        return cpu_state_dict(self)

    def authors_log_prob(self, token_logp: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                         max_new_tokens: int) -> torch.Tensor:
        """EGG's own REINFORCE wrappers sum the message's log-probs."""
        return token_logp.sum(1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def generate(self, features: torch.Tensor, mode: str = "greedy", max_new_tokens: int = 40, num_beams: int = 1,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        if max_new_tokens < self.rnn.max_len + 1:
            raise ValueError(f"--max_len {max_new_tokens} cuts EGG's messages ({self.rnn.max_len} symbols and EOS): "
                             f"give --max_len {self.rnn.max_len + 1} or more, or a smaller --egg_max_len")
        was_training = self.rnn.training
        self.rnn.train(mode == "sample")  # EGG's wrapper: sample in training mode, argmax otherwise
        try:
            symbols = self.rnn(features.float())[0]
        finally:
            self.rnn.train(was_training)
        return symbols, caption_lengths(symbols, [self.pad_id])

    def log_probs(self, features: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                  temperature: float = 1.0, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        rnn = self.rnn
        first = rnn.agent(features.float(), None)
        hidden = [first] + [torch.zeros_like(first) for _ in range(rnn.num_layers - 1)]
        memory = [torch.zeros_like(h) for h in hidden]
        step_input = rnn.sos_embedding.expand(tokens.size(0), -1)
        # Past EGG's max_len its EOS is forced: probability 1, log-prob 0 and no entropy, as EGG reports.
        sampled = min(tokens.size(1), rnn.max_len)
        logits = []
        for step in range(sampled):
            for i, cell in enumerate(rnn.cells):
                if isinstance(cell, nn.LSTMCell):
                    hidden[i], memory[i] = cell(step_input, (hidden[i], memory[i]))
                else:
                    hidden[i] = cell(step_input, hidden[i])
                step_input = hidden[i]
            logits.append(rnn.hidden_to_output(hidden[-1]))
            step_input = rnn.embedding(tokens[:, step])
        token_logp, entropy = token_log_probs(torch.stack(logits, 1), tokens[:, :sampled], lengths, temperature,
                                            entropy_grad)
        forced = tokens.size(1) - sampled
        return F.pad(token_logp, (0, forced)), F.pad(entropy, (0, forced))

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        return [" ".join(self.words[s - 1] for s in row[:n] if s) for row, n in zip(tokens.tolist(), lengths.tolist())]


def build_egg_rnn(feature_dim: int, words: list[str], hidden_size: int = 256, embed_dim: int = 64,
                  max_len: int = 10, cell: str = "gru") -> EggRnnSender:
    """EGG's ``RnnSenderReinforce`` (``max_len`` symbols, then a forced EOS) reading CLIP features."""
    try:
        core = importlib.import_module("egg.core")
    except ImportError as err:
        raise ImportError("--sender egg-rnn wraps EGG's RnnSenderReinforce: install EGG "
                          "(pip install git+https://github.com/facebookresearch/EGG.git)") from err
    rnn = core.RnnSenderReinforce(FeatureAgent(feature_dim, hidden_size), vocab_size=len(words) + 1, embed_dim=embed_dim, hidden_size=hidden_size,
                                  max_len=max_len, cell=cell)
    return EggRnnSender(rnn, words)
