"""torchrun with 2 CPU processes (gloo) plays the same game as one process on the same global batches."""

import json
import os
import subprocess
import sys

import torch

from egg_zoo_discritune.train import EXPORT_FILE, main
from tests.test_train import _argv


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_two_processes_equal_one_process_on_the_same_global_batch(tiny, tmp_path):
    # Greedy captions (the paper's training decoding), so no sampling stream differs across processes;
    # SGD, since Adam turns float rounding in near-zero gradients into full-size steps.
    flags = ("--n_epochs", "1", "--engine", "builtin", "--normalize_advantage", "--optimizer", "sgd", "--lr", "0.1")
    single = main(_argv(tiny, tmp_path / "single", *flags))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "egg.zoo.discritune.train", *_argv(tiny, tmp_path / "ddp", *flags)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes: 2" in done.stderr
    ddp = tmp_path / "ddp"
    # Rank 0 alone wrote the run directory.
    assert {p.name for p in ddp.iterdir()} == {p.name for p in single.iterdir()}
    one, two = _records(single), _records(ddp)
    assert [r["mode"] for r in one] == [r["mode"] for r in two] == ["train_step", "train_step", "train", "test"]
    for a, b in zip(one, two):
        assert set(a) == set(b)
        for key in set(a) - {"mode", "epoch", "step"}:
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (a["mode"], key, a[key], b[key])
    # P@1 is over the whole global batch: chance is 1/4, not 1/2.
    assert one[-1]["acc"] == two[-1]["acc"]
    before = torch.load(tiny.clipcap_weights, weights_only=True)
    a, b = (torch.load(d / EXPORT_FILE, weights_only=True) for d in (single, ddp))
    changed = 0
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=1e-4, atol=1e-6)
        changed += key in before and not torch.equal(before[key], value)
    assert changed > 0
