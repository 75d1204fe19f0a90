"""torchrun with 2 CPU processes (gloo): the same game as one process on the same global batches, and the
same feature cache and evaluation results when extraction and evaluation are sharded."""

import json
import os
import subprocess
import sys

import torch

from egg_zoo_discritune.data_loaders.features import FeatureCache
from egg_zoo_discritune.evaluate import main as evaluate_main
from egg_zoo_discritune.extract_features import main as extract_main
from egg_zoo_discritune.archs.clipcap import EXPORT_FILE
from egg_zoo_discritune.train import main
from tests.test_evaluate import _models
from tests.test_train import _argv


def _torchrun(module, argv):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", module, *argv]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_two_processes_equal_one_process_on_the_same_global_batch(tiny, tmp_path):
    # Greedy captions (the paper's training decoding) and no dropout, so no random stream differs across processes;
    # SGD, since Adam turns float rounding in near-zero gradients into full-size steps; fp32, since --precision auto
    # picks bf16 on a CPU with AMX, whose rounding differs between one batch of 4 and two of 2.
    flags = ("--n_epochs", "1", "--engine", "builtin", "--normalize_advantage", "--optimizer", "sgd", "--lr", "0.1",
             "--dropout", "off", "--precision", "fp32")
    single = main(_argv(tiny, tmp_path / "single", *flags))
    done = _torchrun("egg.zoo.discritune.train", _argv(tiny, tmp_path / "ddp", *flags))
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


def test_sharded_extraction_and_evaluation_equal_one_process(tiny, tmp_path):
    extract = ["--dataset", "coco", "--annotations", str(tiny.coco_json), "--receiver", str(tiny.clip),
               "--splits", "train", "test", "--num_workers", "0", "--batch_size", "3"]
    extract_main([*extract, "--out", str(tmp_path / "one")])
    _torchrun("egg_zoo_discritune.extract_features", [*extract, "--out", str(tmp_path / "two")])
    one, two = (FeatureCache(tmp_path / d, json.loads((tmp_path / d / "manifest.json").read_text()))
                for d in ("one", "two"))
    assert two.manifest["processes"] == 2 and not (tmp_path / "two" / ".parts").exists()
    assert list(one.rows) == list(two.rows) and len(one.rows) == 16
    torch.testing.assert_close(torch.tensor(two.features[:]), torch.tensor(one.features[:]))

    evaluate = [*_models(tiny), "--test_sets", "coco", "--root", f"coco={tiny.coco_root}", "--block_size", "2",
                "--no-nlg", "--decoding", "beam", "--beam_size", "2", "--batch_size", "3"]
    evaluate_main([*evaluate, "--output_dir", str(tmp_path / "eval-one")])
    _torchrun("egg_zoo_discritune.evaluate", [*evaluate, "--output_dir", str(tmp_path / "eval-two")])
    for name in ("captions/ClipCap (pretrained)__coco.jsonl", "results.md"):
        assert (tmp_path / "eval-one" / name).read_text() == (tmp_path / "eval-two" / name).read_text()


def test_two_processes_resume_exactly_with_sampling_and_dropout(tiny, tmp_path):
    # Every rank samples its own captions (seed + rank) through dropout: each one's random state must come back.
    flags = ("--engine", "builtin", "--train_decoding", "sample", "--validation_freq", "0", "--dropout", "on")
    _torchrun("egg.zoo.discritune.train", _argv(tiny, tmp_path / "straight", "--n_epochs", "2", *flags))
    _torchrun("egg.zoo.discritune.train", _argv(tiny, tmp_path / "resumed", "--n_epochs", "1", *flags))
    _torchrun("egg.zoo.discritune.train", _argv(tiny, tmp_path / "resumed", "--n_epochs", "2", "--resume", *flags))
    a, b = (torch.load(tmp_path / d / "final.tar", weights_only=True) for d in ("straight", "resumed"))
    assert len(a["rng_states"]) == 2 and not torch.equal(a["rng_states"][0]["torch"], a["rng_states"][1]["torch"])
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key
