import signal

import pytest
import torch
from torch import nn

from egg_zoo_discritune.engine import Callback, CheckpointSaver, ConsoleLogger, Interaction, LoggingStrategy, Trainer
from egg_zoo_discritune.engine.checkpoint import atomic_save, load_checkpoint, restore


def _interaction(n, value):
    return LoggingStrategy().filtered_interaction(
        sender_input=None, receiver_input=None, labels=torch.arange(n), aux_input=None,
        message=torch.full((n, 3), value), receiver_output=None, message_length=None,
        aux={"acc": torch.full((n,), float(value))})


def test_from_iterable_concatenates_along_the_batch():
    merged = Interaction.from_iterable([_interaction(2, 1), _interaction(3, 0)])
    assert merged.size == 5 and merged.message.shape == (5, 3)
    assert merged.aux["acc"].tolist() == [1, 1, 0, 0, 0]
    assert (_interaction(1, 1) + _interaction(1, 2)).size == 2
    broken = _interaction(1, 1)
    broken.labels = None
    with pytest.raises(RuntimeError):
        Interaction.from_iterable([broken, _interaction(1, 1)])


def test_logging_strategy_minimal_keeps_only_aux():
    kept = LoggingStrategy.minimal().filtered_interaction(
        sender_input=torch.ones(1), receiver_input=None, labels=torch.ones(1), aux_input={}, message=torch.ones(1),
        receiver_output=None, message_length=torch.ones(1), aux={"acc": torch.ones(1)})
    assert kept.labels is None and kept.message is None and kept.aux["acc"].tolist() == [1.0]


class LinearGame(nn.Module):
    """A toy EGG game: squared error of a linear map, accuracy as aux."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, sender_input, labels, receiver_input=None, aux_input=None):
        error = (self.linear(sender_input).squeeze(1) - labels) ** 2
        return error.mean(), _interaction(len(labels), 1)

    def checkpoint_state_dict(self):
        return self.state_dict()

    def load_checkpoint_state_dict(self, state):
        self.load_state_dict(state)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer_instance):
        super().on_train_begin(trainer_instance)
        self.events.append("train_begin")

    def on_epoch_begin(self, epoch):
        self.events.append(f"epoch_begin {epoch}")

    def on_batch_end(self, logs, loss, batch_id, is_training=True):
        self.events.append(f"batch {batch_id} {'train' if is_training else 'test'}")

    def on_epoch_end(self, loss, logs, epoch):
        self.events.append(f"epoch_end {epoch}")

    def on_validation_begin(self, epoch):
        self.events.append(f"validation_begin {epoch}")

    def on_validation_end(self, loss, logs, epoch):
        self.events.append(f"validation_end {epoch}")

    def on_train_end(self):
        self.events.append("train_end")


def _data(n_batches, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 2, generator=g), torch.randn(4, generator=g)) for _ in range(n_batches)]


def test_trainer_calls_hooks_in_egg_order():
    recorder = Recorder()
    game = LinearGame()
    trainer = Trainer(game, torch.optim.SGD(game.parameters(), lr=0.1), _data(2), validation_data=_data(1),
                      callbacks=[recorder], validation_freq=2)
    trainer.train(2)
    assert recorder.events == [
        "train_begin", "epoch_begin 1", "batch 0 train", "batch 1 train", "epoch_end 1",
        "epoch_begin 2", "batch 0 train", "batch 1 train", "epoch_end 2",
        "validation_begin 2", "batch 0 test", "validation_end 2", "train_end",
    ]
    assert recorder.trainer is trainer


def test_update_freq_accumulates_gradients():
    data = _data(2)
    accumulated, single = LinearGame(), LinearGame()
    single.load_state_dict(accumulated.state_dict())
    Trainer(accumulated, torch.optim.SGD(accumulated.parameters(), lr=0.1), data, update_freq=2).train(1)
    # One SGD step on the mean of the two batches' gradients.
    loss = sum(single(*batch)[0] for batch in data) / 2
    loss.backward()
    with torch.no_grad():
        for p in single.parameters():
            p -= 0.1 * p.grad
    for a, b in zip(accumulated.parameters(), single.parameters()):
        torch.testing.assert_close(a, b)


def test_console_logger_prints_egg_json(capsys):
    ConsoleLogger(as_json=True).on_validation_end(0.5, _interaction(2, 1), 3)
    assert capsys.readouterr().out.strip() == '{"loss": 0.5, "acc": 1.0, "mode": "test", "epoch": 3}'


def test_checkpoint_saver_and_restore(tmp_path):
    game = LinearGame()
    optimizer = torch.optim.Adam(game.parameters(), lr=0.1)
    trainer = Trainer(game, optimizer, _data(2), callbacks=[CheckpointSaver(str(tmp_path), checkpoint_freq=1,
                                                                            max_checkpoints=1)])
    trainer.train(2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.tar", "final.tar"]
    checkpoint = load_checkpoint(tmp_path / "final.tar")
    assert checkpoint["epoch"] == 2
    fresh = LinearGame()
    fresh_trainer = Trainer(fresh, torch.optim.Adam(fresh.parameters(), lr=0.1), _data(2))
    restore(fresh_trainer, checkpoint)
    assert fresh_trainer.start_epoch == 2
    for a, b in zip(fresh.parameters(), game.parameters()):
        assert torch.equal(a, b)
    assert fresh_trainer.optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    atomic_save({"a": torch.ones(1)}, tmp_path / "ok.tar")
    with pytest.raises(RuntimeError):
        atomic_save({"a": Unpicklable()}, tmp_path / "ok.tar")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.tar"]
    assert torch.equal(torch.load(tmp_path / "ok.tar", weights_only=True)["a"], torch.ones(1))


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, which a shell's background job (``make test &``) starts without."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_save_comes_after_the_file_is_in_place(tmp_path, ctrl_c_raises):
    class InterruptsWhilePickled:
        def __reduce__(self):
            signal.raise_signal(signal.SIGINT)  # as a Ctrl-C halfway through torch.save
            return dict, ((("b", 2),),)

    with pytest.raises(KeyboardInterrupt):
        atomic_save({"a": torch.ones(1), "b": InterruptsWhilePickled()}, tmp_path / "ok.tar")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.tar"]
    saved = torch.load(tmp_path / "ok.tar", weights_only=False)
    assert torch.equal(saved["a"], torch.ones(1)) and saved["b"] == {"b": 2}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
