"""Senders and receivers by name: a sender registered by another installed package through an entry
point, and training against two retrievers evaluated with a third, held out."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from egg_zoo_discritune.archs.registry import sender_names
from egg_zoo_discritune.engine.checkpoint import load_checkpoint
from egg_zoo_discritune.evaluate import main as evaluate
from egg_zoo_discritune.train import main as train
from tests.test_evaluate import _models
from tests.test_train import _argv
from tests.tiny_assets import write_clip

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "word_slots"


def test_a_sender_from_another_package_trains(tiny, tmp_path, monkeypatch):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(EXAMPLE)], check=True, capture_output=True)
    assert "word-slots" not in sender_names()
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert "word-slots" in sender_names()
    run_dir = train(_argv(tiny, tmp_path / "run", "--sender", "word-slots", "--n_epochs", "2", "--lr", "0.05",
                          "--train_decoding", "sample"))
    first, last = (load_checkpoint(run_dir / name)["model_state_dict"] for name in ("1.tar", "final.tar"))
    assert set(first) >= {"sender.head.weight", "sender.head.bias"}
    assert not torch.equal(first["sender.head.weight"], last["sender.head.weight"])
    assert set(torch.load(run_dir / "sender_finetuned.pt", weights_only=True)) == {"head.weight", "head.bias"}
    with pytest.raises(ValueError, match="unknown sender 'nope'.*word-slots"):
        train(_argv(tiny, tmp_path / "bad", "--sender", "nope"))


def test_two_training_retrievers_and_a_held_out_one(tiny, tmp_path):
    second, held_out = write_clip(tmp_path / "clip2", seed=1), write_clip(tmp_path / "clip3", seed=2)
    receivers = f"{tiny.clip},{second}"
    for mode in ("alternate", "average"):
        argv = _argv(tiny, tmp_path / mode, "--n_epochs", "1", "--receiver_mode", mode)
        argv[argv.index("--receiver") + 1] = receivers
        run_dir = train(argv)
        state = load_checkpoint(run_dir / "final.tar")["model_state_dict"]
        assert state["updates"].item() == 2 and not any("receiver" in k for k in state)
        test = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()][-1]
        assert test["mode"] == "test" and {"acc", "acc_0", "acc_1"} <= set(test)
    models = _models(tiny)
    evaluation = ["--checkpoints", str(run_dir), "--test_sets", "coco", "--root", f"coco={tiny.coco_root}",
                  "--block_size", "2", "--no-nlg", "--no-human", "--decoding", "greedy"]
    models[models.index("--receiver") + 1] = f"{receivers},{held_out}"
    row = evaluate([*models, *evaluation, "--output_dir", str(tmp_path / "eval")])[0]
    # Each extra retriever's column is what that retriever alone gives to the same captions (the captioner
    # still reading the first retriever's features).
    for name in (second, held_out):
        models[models.index("--receiver") + 1] = str(name)
        alone = evaluate([*models, *evaluation, "--sender_clip", str(tiny.clip), "--output_dir", str(tmp_path / "one")])
        assert row[f"p_at_1 [{name}]"] == alone[0]["p_at_1"]
