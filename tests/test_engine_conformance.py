"""The built-in engine is EGG's, as far as the game can tell: the same seeded game, data and options under
facebookresearch's ``egg.core.Trainer`` and under the built-in Trainer give the same losses, the same logged
values, the same weights and the same callback calls in the same order, straight and across a resume."""

import importlib.util
import random

import pytest
import torch

from egg_zoo_discritune.config import parse_config
from egg_zoo_discritune.egg_compat import load_engine
from egg_zoo_discritune.engine.checkpoint import restore, trainer_state
from egg_zoo_discritune.train import build_game, build_optimizer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("egg.core") is None,
                                reason="EGG is not installed (make install installs it from ../shared/wheels)")


def _recorder(engine):
    """A callback of ``engine``'s own Callback class that writes down every call it gets."""

    class Recorder(engine.Callback):
        def __init__(self):
            self.calls = []

        def _note(self, hook, *values, logs=None):
            aux = {k: round(v.float().mean().item(), 5) for k, v in sorted(logs.aux.items())} if logs else None
            self.calls.append((hook, *values, aux))

        def on_train_begin(self, trainer_instance):
            super().on_train_begin(trainer_instance)
            self._note("train_begin", trainer_instance.start_epoch)

        def on_epoch_begin(self, epoch):
            self._note("epoch_begin", epoch)

        def on_batch_end(self, logs, loss, batch_id, is_training=True):
            self._note("batch_end", batch_id, is_training, round(float(torch.as_tensor(loss).detach()), 5), logs=logs)

        def on_epoch_end(self, loss, logs, epoch):
            self._note("epoch_end", epoch, round(float(loss), 5), logs=logs)

        def on_validation_begin(self, epoch):
            self._note("validation_begin", epoch)

        def on_validation_end(self, loss, logs, epoch):
            self._note("validation_end", epoch, round(float(loss), 5), logs=logs)

        def on_train_end(self):
            self._note("train_end")

    return Recorder()


def _trainer(tiny, name, update_freq=1):
    engine = load_engine(name)
    engine.init(use_cuda=False, random_seed=0, update_freq=update_freq)
    cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights), "--receiver",
                        str(tiny.clip), "--max_len", "6", "--train_decoding", "sample", "--test_decoding", "greedy"])
    game, _ = build_game(cfg, engine)
    optimizer = build_optimizer("adam", game.sender.trainable_parameters(), 1e-3)
    images = torch.Generator().manual_seed(1)
    train = [(torch.randn(4, 3, 32, 32, generator=images), torch.arange(4)) for _ in range(3)]
    validation = [(torch.randn(4, 3, 32, 32, generator=images), torch.arange(4))]
    recorder = _recorder(engine)
    trainer = engine.make_trainer(game, optimizer, train, validation, [recorder], device=torch.device("cpu"),
                                  update_freq=update_freq)
    return trainer, recorder


def _train(trainer, n_epochs, seed=0):
    torch.manual_seed(seed)
    random.seed(seed)
    trainer.train(n_epochs)
    return {k: v.clone() for k, v in trainer.game.checkpoint_state_dict().items()}


@pytest.mark.parametrize("update_freq", [1, 2])
def test_egg_trainer_and_builtin_trainer_play_the_same_game(tiny, update_freq):
    results = {}
    for name in ("egg", "builtin"):
        trainer, recorder = _trainer(tiny, name, update_freq)
        assert type(trainer).__module__ == ("egg.core.trainers" if name == "egg" else "egg_zoo_discritune.engine.trainer")
        results[name] = (_train(trainer, 2), recorder.calls)
    (egg_weights, egg_calls), (builtin_weights, builtin_calls) = results["egg"], results["builtin"]
    assert [c[0] for c in egg_calls] == [c[0] for c in builtin_calls]
    assert egg_calls == builtin_calls
    batches = [c[2] for c in egg_calls if c[0] == "batch_end"]  # is_training: 3 + 3 updates, 1 + 1 validations
    assert batches == [True] * 3 + [False] + [True] * 3 + [False]
    for key, value in egg_weights.items():
        assert torch.equal(value, builtin_weights[key]), key


def test_the_same_across_a_resume(tiny):
    calls, weights = {}, {}
    for name in ("egg", "builtin"):
        first, _ = _trainer(tiny, name)
        _train(first, 1)
        state = trainer_state(first, 1)
        second, recorder = _trainer(tiny, name)
        restore(second, state)
        second.train(2)
        calls[name], weights[name] = recorder.calls, second.game.checkpoint_state_dict()
        straight, _ = _trainer(tiny, name)
        uninterrupted = _train(straight, 2)
        for key, value in uninterrupted.items():
            assert torch.equal(value, weights[name][key]), (name, key)
    assert calls["egg"] == calls["builtin"] and calls["egg"][0] == ("train_begin", 1, None)
    for key, value in weights["egg"].items():
        assert torch.equal(value, weights["builtin"][key]), key
