"""Every bad weight or checkpoint file, and Ctrl-C, end the training command with one line and exit code,
no traceback, no advice to load unsafely, and the run directory as it was (issue #12)."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from tests import openai_clip_reference as ref
from tests.test_train import _argv


def _train(argv, cwd):
    return subprocess.run([sys.executable, "-m", "egg_zoo_discritune.train", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _refused(result, match: str) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1, result.stderr
    assert len(errors) == 1 and match in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    return errors[0]


def _with(argv, flag, value):
    argv = list(argv)
    argv[argv.index(flag) + 1] = str(value)
    return argv


@pytest.fixture(scope="module")
def finished_run(tiny, tmp_path_factory):
    from egg_zoo_discritune.train import main

    return main(_argv(tiny, tmp_path_factory.mktemp("run") / "run", "--n_epochs", "1", "--validation_freq", "0"))


def test_bad_clipcap_weights(tiny, tmp_path):
    random_bytes, truncated, scripted = tmp_path / "random.pt", tmp_path / "truncated.pt", tmp_path / "scripted.pt"
    random_bytes.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0))
                             .to(torch.uint8).numpy().tobytes())
    truncated.write_bytes(tiny.clipcap_weights.read_bytes()[:3000])
    ref.save_torchscript(torch.load(tiny.clipcap_weights, weights_only=True), scripted)
    cases = {random_bytes: "not a torch.save file", truncated: "a truncated or corrupt torch.save file",
             scripted: "is a TorchScript archive"}
    for weights, match in cases.items():
        run_dir = tmp_path / f"run-{weights.stem}"
        line = _refused(_train(_with(_argv(tiny, run_dir), "--clipcap_weights", weights), tmp_path), match)
        assert str(weights) in line
        assert not run_dir.exists()  # nothing written on a failed start


def test_torchscript_clip_only_when_trusted(tiny, tmp_path):
    archive = tmp_path / "ViT-B-32.pt"
    ref.save_torchscript(ref.random_openai_state_dict(vocab_size=64), archive)
    argv = _with(_argv(tiny, tmp_path / "run"), "--receiver", archive)
    _refused(_train(argv, tmp_path), "--trust_torchscript")
    from egg_zoo_discritune.archs.clip import load_retriever

    retriever, _ = load_retriever(str(archive), tokenizer=str(tiny.clip), trust_torchscript=True)
    assert retriever.feature_dim == 16


def test_checkpoint_of_another_model_or_not_a_checkpoint(tiny, tmp_path, finished_run):
    checkpoint = torch.load(finished_run / "final.tar", weights_only=True)
    state = checkpoint["model_state_dict"]
    name = next(k for k in state if k.endswith("wte.weight"))
    state[name] = torch.zeros(state[name].shape[0], state[name].shape[1] * 2)
    other_size = tmp_path / "other_size.tar"
    torch.save(checkpoint, other_size)
    cases = {other_size: "a checkpoint of another model size (1 tensors differ, first: size mismatch for "
                         f"{name}", tiny.clipcap_weights: "not a training checkpoint of this package"}
    for path, match in cases.items():
        run_dir = tmp_path / f"run-{path.stem}"
        _refused(_train([*_argv(tiny, run_dir), "--load_from_checkpoint", str(path)], tmp_path), match)
        assert not run_dir.exists()
    # A resume against a run of another model leaves that run's files untouched.
    before = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    _refused(_train([*_argv(tiny, finished_run), "--resume", "--trainable", "mapper"], tmp_path), "final.tar")
    assert {p.name: p.read_bytes() for p in finished_run.iterdir()} == before


def test_ctrl_c_is_one_line(tiny, tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "egg_zoo_discritune.train",
                                *_argv(tiny, run_dir, "--n_epochs", "1000", "--validation_freq", "0")],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               # as from a terminal: a shell's background job (`pytest &`) ignores SIGINT, and
                               # its children inherit that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (run_dir / "log.jsonl").is_file() and time.monotonic() < deadline:  # training has begun
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    try:
        stderr = process.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints where every thread is
        pytest.fail(f"still running 60 s after SIGINT:\n{process.communicate()[1][-8000:]}")
    assert process.returncode == 130 and stderr.splitlines()[-1] == "interrupted", stderr
    assert "Traceback" not in stderr
