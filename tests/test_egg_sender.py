"""An EGG emergent-language agent, the real ``egg.core.RnnSenderReinforce``, as the sender."""

import importlib.util
import sys

import pytest
import torch

from egg_zoo_discritune.archs.egg_rnn import build_egg_rnn
from egg_zoo_discritune.engine.checkpoint import load_checkpoint
from egg_zoo_discritune.train import main as train
from tests.test_train import _argv

WORDS = ["red", "green", "blue", "circle", "square"]
needs_egg = pytest.mark.skipif(importlib.util.find_spec("egg.core") is None,
                               reason="EGG is not installed (make install installs it from ../shared/wheels)")


@needs_egg
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forced_log_probs_equal_egg_own(cell):
    import egg.core

    torch.manual_seed(0)
    sender = build_egg_rnn(16, WORDS, hidden_size=8, embed_dim=4, max_len=5, cell=cell)
    assert type(sender.rnn) is egg.core.RnnSenderReinforce
    features = torch.randn(64, 16)
    sender.rnn.train()
    torch.manual_seed(1)
    symbols, egg_logp, egg_entropy = sender.rnn(features)
    torch.manual_seed(1)
    tokens, lengths = sender.generate(features, mode="sample", max_new_tokens=6)
    # EGG samples max_len symbols and appends EOS: every message of 6 ends with it.
    assert torch.equal(tokens, symbols) and tokens.size(1) == 6 and tokens[:, -1].eq(0).all()
    assert torch.equal(lengths, egg.core.find_lengths(symbols))
    token_logp, entropy = sender.log_probs(features, tokens, lengths)
    mask = torch.arange(6) < lengths[:, None]
    torch.testing.assert_close(token_logp, egg_logp * mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy, egg_entropy * mask, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="cuts EGG's messages"):
        sender.generate(features, mode="sample", max_new_tokens=5)
    captions = sender.decode(tokens, lengths)
    assert all(set(c.split()) <= set(WORDS) for c in captions)


@needs_egg
def test_training_with_the_egg_sender(tiny, tmp_path):
    run_dir = train(_argv(tiny, tmp_path / "run", "--sender", "egg-rnn", "--egg_words", *WORDS, "--egg_max_len", "5",
                          "--train_decoding", "sample", "--n_epochs", "2", "--lr", "0.01"))
    first, last = (load_checkpoint(run_dir / n)["model_state_dict"] for n in ("1.tar", "final.tar"))
    assert "sender.rnn.hidden_to_output.weight" in first
    assert not torch.equal(first["sender.rnn.hidden_to_output.weight"], last["sender.rnn.hidden_to_output.weight"])


def test_a_clear_error_without_egg(monkeypatch):
    monkeypatch.setitem(sys.modules, "egg.core", None)  # what Python does for a module that cannot be imported
    with pytest.raises(ImportError, match="install EGG"):
        build_egg_rnn(16, WORDS)
