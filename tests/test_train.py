import json
import signal
import subprocess
import sys

import pytest
import torch

from egg_zoo_discritune.archs.clipcap import EXPORT_FILE, build_clipcap
from egg_zoo_discritune.config import build_parser, parse_config
from egg_zoo_discritune.engine.checkpoint import load_checkpoint
from egg_zoo_discritune.train import main


def _argv(tiny, run_dir, *extra):
    return ["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights), "--receiver", str(tiny.clip),
            "--dataset", "coco", "--annotations", str(tiny.coco_json), "--batch_size", "4", "--lr", "1e-3",
            "--num_workers", "0", "--max_len", "10", "--no-include_restval", "--checkpoint_dir", str(run_dir),
            "--log_every", "1", *extra]


def test_training_run_writes_config_logs_checkpoints_and_export(tiny, tmp_path):
    run_dir = main(_argv(tiny, tmp_path / "run", "--n_epochs", "1"))
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "log.jsonl", "1.tar", "final.tar", EXPORT_FILE}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["egg"]["batch_size"] == 4 and config["receiver"]["similarity"] == "scaled_cosine"
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in records] == ["train_step", "train_step", "train", "test"]
    assert {"acc", "reward", "baseline", "logp", "length", "entropy", "loss"} <= set(records[0])
    checkpoint = load_checkpoint(run_dir / "final.tar")
    assert checkpoint["epoch"] == 1
    assert not any(k.startswith("receiver.") for k in checkpoint["model_state_dict"])
    assert "baseline.mean" in checkpoint["model_state_dict"]
    # The export is a ClipCap file: it loads strictly and holds the finetuned weights.
    exported = torch.load(run_dir / EXPORT_FILE, weights_only=True)
    original = torch.load(tiny.clipcap_weights, weights_only=True)
    assert set(exported) == set(original)
    assert not torch.equal(exported["clip_project.model.0.weight"], original["clip_project.model.0.weight"])
    assert torch.equal(exported["clip_project.model.0.weight"],
                       checkpoint["model_state_dict"]["sender.clip_project.model.0.weight"])
    build_clipcap(str(tiny.gpt2), str(run_dir / EXPORT_FILE))


def test_two_epochs_plus_resume_equal_one_uninterrupted_run(tiny, tmp_path):
    sampling = ("--train_decoding", "sample", "--validation_freq", "0")
    straight = main(_argv(tiny, tmp_path / "straight", "--n_epochs", "2", *sampling))
    main(_argv(tiny, tmp_path / "resumed", "--n_epochs", "1", *sampling))
    resumed = main(_argv(tiny, tmp_path / "resumed", "--n_epochs", "2", "--resume", *sampling))
    a, b = load_checkpoint(straight / "final.tar"), load_checkpoint(resumed / "final.tar")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key
    for (_, sa), (_, sb) in zip(sorted(a["optimizer_state_dict"]["state"].items()),
                                sorted(b["optimizer_state_dict"]["state"].items())):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    steps = [json.loads(line)["step"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2, 3, 4, 4]


def test_existing_run_directory_is_not_overwritten(tiny, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--resume"):
        main(_argv(tiny, tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        main(_argv(tiny, tmp_path / "run", "--resume"))


def test_missing_files_give_one_clear_error(tiny, tmp_path):
    argv = _argv(tiny, tmp_path / "a")
    argv[argv.index("--clipcap_weights") + 1] = str(tmp_path / "coco_weights.pt")
    with pytest.raises(FileNotFoundError, match="Google Drive id"):
        main(argv)
    argv = _argv(tiny, tmp_path / "b")
    argv[argv.index("--annotations") + 1] = str(tmp_path / "dataset_coco.json")
    with pytest.raises(FileNotFoundError, match="Karpathy split file not found"):
        main(argv)


def test_presets_and_help():
    cfg = parse_config(["--preset", "paper-concap", "--lr", "2e-7"])
    assert cfg.egg.n_epochs == 2 and cfg.egg.lr == 2e-7 and cfg.data.dataset == "conceptual"
    assert cfg.sender.clipcap_weights == "conceptual_weights.pt"
    help_text = build_parser().format_help()
    for option in ("--batch_size", "--receiver", "--similarity", "--baseline", "--stop_rule", "--resume", "paper-coco"):
        assert option in help_text
    with pytest.raises(SystemExit):
        parse_config(["--preset", "nope"])


_KILLED_AT_STEP = """
import os, signal, sys
from egg_zoo_discritune import run_dir
log_batch = run_dir.JsonlLogger.on_batch_end
def log_then_die(self, *args, **kwargs):
    log_batch(self, *args, **kwargs)
    if self.step == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
run_dir.JsonlLogger.on_batch_end = log_then_die
from egg_zoo_discritune.train import main
main(sys.argv[2:])
"""


def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_run(tiny, tmp_path):
    sampling = ("--train_decoding", "sample", "--n_epochs", "2")
    straight = main(_argv(tiny, tmp_path / "straight", *sampling))
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_STEP, "3",
                             *_argv(tiny, tmp_path / "run", *sampling, "--n_epochs", "3")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = main(_argv(tiny, tmp_path / "run", *sampling, "--resume"))
    # Epoch 1's checkpoint and step 3 (of epoch 2) were written before the kill; the resumed run redoes step 3.
    records = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert records == [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    a, b = load_checkpoint(straight / "final.tar"), load_checkpoint(resumed / "final.tar")
    assert all(torch.equal(v, b["model_state_dict"][k]) for k, v in a["model_state_dict"].items())
    config = json.loads((resumed / "config.json").read_text())
    assert config["egg"]["n_epochs"] == 2
    [resume] = config["resumes"]
    assert resume["checkpoint"] == str(resumed / "1.tar") and resume["epoch"] == 1
    assert resume["changed"] == {"egg.n_epochs": [3, 2]}
