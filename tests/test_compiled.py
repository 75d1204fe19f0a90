"""--compile: the compiled teacher-forced pass gives the eager values and gradients, a training run uses it,
and a missing or failing backend falls back to eager execution with one warning."""

import json
import logging

import pytest
import torch
import torch._dynamo

from egg_zoo_discritune.archs.clipcap import build_clipcap
from egg_zoo_discritune.compiled import compile_or_eager, missing_backend
from egg_zoo_discritune.train import main
from tests.test_train import _argv
from tests.tiny_assets import CLIP_DIM

CPU = torch.device("cpu")
needs_compiler = pytest.mark.skipif(missing_backend(CPU) is not None, reason="no C++ compiler for Inductor")


def _pass(sender, log_probs, features, tokens, lengths):
    sender.zero_grad()
    token_logp, entropy = log_probs(features, tokens, lengths)
    (token_logp.sum() + entropy.sum()).backward()
    return token_logp.detach(), entropy.detach(), {n: p.grad.clone() for n, p in sender.named_parameters()
                                                   if p.grad is not None}


@needs_compiler
def test_the_compiled_pass_gives_the_eager_values_and_gradients(tiny):
    torch.manual_seed(0)
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights))
    compiled = compile_or_eager(sender.log_probs, CPU, "the teacher-forced pass")
    assert compiled is not sender.log_probs
    for batch, length in ((3, 7), (5, 4)):  # dynamic shapes: another batch and caption length
        features, tokens = torch.randn(batch, CLIP_DIM), torch.randint(0, 200, (batch, length))
        lengths = torch.randint(1, length + 1, (batch,))
        eager = _pass(sender, sender.log_probs, features, tokens, lengths)
        fast = _pass(sender, compiled, features, tokens, lengths)
        torch.testing.assert_close(fast[0], eager[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast[1], eager[1], rtol=1e-4, atol=1e-5)
        assert fast[2].keys() == eager[2].keys() and len(eager[2]) > 10
        for name, grad in eager[2].items():
            torch.testing.assert_close(fast[2][name], grad, rtol=1e-3, atol=1e-5, msg=name)


@needs_compiler
def test_a_training_run_compiles_its_teacher_forced_pass(tiny, tmp_path):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run_dir = main(_argv(tiny, tmp_path / "run", "--n_epochs", "1", "--validation_freq", "0", "--dropout", "off",
                         "--compile"))
    assert json.loads((run_dir / "config.json").read_text())["egg"]["compile"] is True
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    steps = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [s["mode"] for s in steps] == ["train_step", "train_step", "train"]


def test_without_a_compiler_the_pass_runs_eagerly_and_says_why(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler")
    fn = torch.nn.Linear(2, 2).forward
    with caplog.at_level(logging.WARNING, "discritune"):
        assert compile_or_eager(fn, CPU, "the teacher-forced pass") is fn
    assert "runs eagerly: Inductor needs a C++ compiler on the CPU, and 'no-such-compiler' is not" in caplog.text


def test_a_failing_compilation_warns_once_and_runs_eagerly(monkeypatch, caplog):
    calls = []

    def failing_compile(fn, dynamic):
        def compiled(*args):
            calls.append(args)
            raise RuntimeError("InductorError: C++ compile error\nmore lines")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    monkeypatch.setattr("egg_zoo_discritune.compiled.missing_backend", lambda device: None)
    fn = compile_or_eager(lambda x: x + 1, CPU, "the teacher-forced pass")
    with caplog.at_level(logging.WARNING, "discritune"):
        assert fn(1) == 2 and fn(2) == 3
    assert len(calls) == 1  # the compiled function is not tried again
    assert caplog.text.count("compiling the teacher-forced pass failed (RuntimeError: InductorError: C++ compile "
                             "error); it runs eagerly from now on") == 1
