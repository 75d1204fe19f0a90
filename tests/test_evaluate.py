import csv
import hashlib
import json

import pytest

from egg_zoo_discritune.caption import main as caption_main
from egg_zoo_discritune.evaluate import HUMAN, main as evaluate_main
from egg_zoo_discritune.train import main as train_main
from tests.test_eval_data import write_nocaps


def _models(tiny):
    return ["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights), "--receiver", str(tiny.clip),
            "--max_len", "8", "--num_workers", "0"]


@pytest.fixture(scope="module")
def trained_run(tiny, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    return train_main([*_models(tiny), "--dataset", "coco", "--annotations", str(tiny.coco_json), "--batch_size", "4",
                       "--n_epochs", "1", "--lr", "1e-3", "--checkpoint_dir", str(run_dir)])


def test_evaluate_checkpoints_on_several_test_sets(tiny, trained_run, tmp_path):
    write_nocaps(tmp_path / "nocaps", ["near-domain"] * 5 + ["out-domain"] * 2, missing=1)
    out = tmp_path / "eval"
    results = evaluate_main([
        *_models(tiny), "--checkpoints", "pretrained", str(trained_run), str(trained_run / "1.tar"),
        "--test_sets", "coco", "nocaps-near", "--root", f"coco={tiny.coco_root}", "--data_dir", str(tmp_path),
        "--block_size", "2", "--decoding", "greedy", "--output_dir", str(out)])
    assert {p.name for p in out.iterdir()} == {"results.json", "results.csv", "results.md", "captions", "gallery.html"}
    assert len(results) == 4 * 2
    by_key = {(r["model"], r["test_set"]): r for r in results}
    coco = by_key["ClipCap (pretrained)", "coco"]
    assert coco["n_images"] == 4 and coco["n_blocks"] == 2 and coco["n_dropped"] == 0
    assert coco["decoding"] == "greedy" and coco["beam_size"] == 1 and coco["versions"]["torch"]
    assert coco["sha256"] == hashlib.sha256(tiny.clipcap_weights.read_bytes()).hexdigest()
    assert {"bleu_4", "meteor", "rouge_l", "cider", "recall_at_1", "recall_at_5"} <= set(coco)
    assert coco["spice"].startswith("not available")
    nocaps = by_key["run", "nocaps-near"]
    assert nocaps["n_images"] == 4 and nocaps["n_skipped"] == 1 and nocaps["split"] == "near-domain"
    assert by_key["run/1.tar", "coco"]["epoch"] == 1
    # The export and the checkpoint of the same finished run write the same captions.
    captions = {f.name: f.read_text() for f in (out / "captions").iterdir()}
    assert captions["run__coco.jsonl"] == captions["run_1.tar__coco.jsonl"]
    lines = [json.loads(line) for line in captions["ClipCap (pretrained)__nocaps-near.jsonl"].splitlines()]
    assert len(lines) == 4 and len(lines[0]["references"]) == 10 and "caption" in lines[0]
    assert by_key[HUMAN, "coco"]["checkpoint"] is None
    table = (out / "results.md").read_text()
    assert "| model | COCO | nocaps near |" in table and "| Human captions |" in table
    assert "COCO B@4 | COCO M | COCO C | COCO S" in table and "SPICE not available" in table
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 8


def test_evaluate_refuses_unknown_sets_and_missing_data(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown test set"):
        evaluate_main([*_models(tiny), "--test_sets", "imagenet", "--output_dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="nocaps annotations not found"):
        evaluate_main([*_models(tiny), "--test_sets", "nocaps-out", "--data_dir", str(tmp_path),
                       "--output_dir", str(tmp_path)])


def test_caption_a_folder(tiny, trained_run, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    output = caption_main([*_models(tiny), "--checkpoint", str(trained_run),
                           "--images", str(tiny.coco_root / "val2014"), str(tmp_path / "broken.png"),
                           "--output", str(tmp_path / "out" / "captions.jsonl")])
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 12 and all(set(line) == {"path", "caption"} for line in lines)
    assert lines[0]["path"].endswith(".png")


def test_validation_p_at_1_of_the_game_equals_evaluate(tiny, tmp_path):
    # Two implementations of the paper's P@1 (the game in validation, metrics.retrieval in evaluate) on the
    # same 8 images in blocks of 2, the same beam-search captions and the same retriever.
    run_dir = train_main([*_models(tiny), "--dataset", "coco", "--annotations", str(tiny.coco_json), "--batch_size",
                          "2", "--n_epochs", "1", "--lr", "1e-3", "--no-include_restval", "--val_split", "train",
                          "--max_train_images", "4", "--checkpoint_dir", str(tmp_path / "run")])
    validation = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()][-1]
    assert validation["mode"] == "test"
    results = evaluate_main([*_models(tiny), "--checkpoints", str(run_dir), "--test_sets", "coco:train", "--root",
                             f"coco={tiny.coco_root}", "--block_size", "2", "--no-nlg", "--no-human",
                             "--output_dir", str(tmp_path / "eval")])
    assert results[0]["n_blocks"] == 4
    assert validation["acc"] == pytest.approx(results[0]["p_at_1"])
