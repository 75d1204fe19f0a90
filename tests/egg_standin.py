"""An EGG-shaped project written by the tests: ``setup.py``, plain ``egg/__init__.py`` and
``egg/zoo/__init__.py`` (regular packages, as EGG's), and ``egg/core`` with EGG's public API and its
global options (``init`` / ``get_opts``). Its Trainer appends a line to ``$EGG_STANDIN_MARKER``, so a
test can tell that the real-EGG route was taken."""

from __future__ import annotations

from pathlib import Path

CORE = '''
import argparse
import os

import torch

from egg_zoo_discritune.engine import trainer as _builtin
from egg_zoo_discritune.engine.callbacks import Callback, ConsoleLogger, ProgressBarLogger
from egg_zoo_discritune.engine.interaction import Interaction, LoggingStrategy

_common_opts = None


def init(arg_parser=None, params=None):
    global _common_opts
    parser = arg_parser or argparse.ArgumentParser()
    parser.add_argument("--validation_freq", type=int, default=1)
    parser.add_argument("--update_freq", type=int, default=1)
    parser.add_argument("--random_seed", type=int, default=None)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--no_cuda", action="store_true")
    _common_opts = parser.parse_args(params)
    return _common_opts


def get_opts():
    return _common_opts


class RnnSenderReinforce(torch.nn.Module):
    """EGG's variable-length REINFORCE sender: the agent gives the first hidden state, the cells unroll
    for max_len - 1 steps, sampling in training and taking the argmax otherwise, then EOS (0) is forced.
    Returns (symbols, log-prob of each symbol, entropy of each step)."""

    def __init__(self, agent, vocab_size, embed_dim, hidden_size, max_len, num_layers=1, cell="rnn", force_eos=True):
        super().__init__()
        self.agent, self.vocab_size, self.num_layers = agent, vocab_size, num_layers
        self.max_len = max_len - 1 if force_eos else max_len
        self.force_eos = force_eos
        self.hidden_to_output = torch.nn.Linear(hidden_size, vocab_size)
        self.embedding = torch.nn.Embedding(vocab_size, embed_dim)
        self.sos_embedding = torch.nn.Parameter(torch.randn(embed_dim) * 0.01)
        kind = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[cell]
        self.cells = torch.nn.ModuleList(kind(embed_dim if i == 0 else hidden_size, hidden_size)
                                         for i in range(num_layers))

    def forward(self, x, aux_input=None):
        hidden = [self.agent(x, aux_input)]
        hidden += [torch.zeros_like(hidden[0]) for _ in range(self.num_layers - 1)]
        memory = [torch.zeros_like(hidden[0]) for _ in range(self.num_layers)]
        step_input = torch.stack([self.sos_embedding] * x.size(0))
        symbols, logps, entropies = [], [], []
        for _ in range(self.max_len):
            for i, cell in enumerate(self.cells):
                if isinstance(cell, torch.nn.LSTMCell):
                    hidden[i], memory[i] = cell(step_input, (hidden[i], memory[i]))
                else:
                    hidden[i] = cell(step_input, hidden[i])
                step_input = hidden[i]
            distribution = torch.distributions.Categorical(logits=self.hidden_to_output(hidden[-1]).log_softmax(1))
            symbol = distribution.sample() if self.training else distribution.probs.argmax(1)
            symbols.append(symbol)
            logps.append(distribution.log_prob(symbol))
            entropies.append(distribution.entropy())
            step_input = self.embedding(symbol)
        symbols, logps, entropies = (torch.stack(v, 1) for v in (symbols, logps, entropies))
        if self.force_eos:
            zeros = torch.zeros_like(symbols[:, :1])
            symbols = torch.cat([symbols, zeros], 1)
            logps = torch.cat([logps, zeros.float()], 1)
            entropies = torch.cat([entropies, zeros.float()], 1)
        return symbols, logps, entropies


class Trainer(_builtin.Trainer):
    def __init__(self, game, optimizer, train_data, optimizer_scheduler=None, validation_data=None, device=None,
                 callbacks=None, grad_norm=None, aggregate_interaction_logs=True):
        opts = get_opts()
        if os.environ.get("EGG_STANDIN_MARKER"):
            with open(os.environ["EGG_STANDIN_MARKER"], "a") as f:
                f.write("egg.core.Trainer\\n")
        super().__init__(game, optimizer, train_data, optimizer_scheduler, validation_data, device, callbacks,
                         grad_norm, aggregate_interaction_logs, validation_freq=opts.validation_freq,
                         update_freq=opts.update_freq, fp16=opts.fp16)
'''


def write_egg_project(root: Path) -> Path:
    """The project folder (what a ``git clone`` of EGG gives): install it, or put it on the path."""
    (root / "egg" / "zoo").mkdir(parents=True)
    (root / "egg" / "core").mkdir()
    (root / "egg" / "__init__.py").write_text("# EGG-shaped stand-in\n")
    (root / "egg" / "zoo" / "__init__.py").write_text("# EGG-shaped stand-in\n")
    (root / "egg" / "core" / "__init__.py").write_text(CORE)
    (root / "setup.py").write_text(
        "from setuptools import find_packages, setup\n"
        "setup(name='EGG', version='0.1.0', packages=find_packages(include=['egg', 'egg.*']))\n")
    return root
