"""The frozen-feature cache: same features and rewards as the image path, the image tower is not run
when training from it, and a cache of another model or preprocessing is refused."""

import json
import shutil

import numpy as np
import pytest
import torch

from egg_zoo_discritune.config import ReceiverOptions, parse_config
from egg_zoo_discritune.data_loaders.coco import karpathy_records
from egg_zoo_discritune.data_loaders.features import FeatureCache, fingerprint
from egg_zoo_discritune.data_loaders.images import ImageRecordsDataset
from egg_zoo_discritune.egg_compat import load_engine
from egg_zoo_discritune.evaluate import main as evaluate
from egg_zoo_discritune.extract_features import main as extract
from egg_zoo_discritune.factory import load_clips
from egg_zoo_discritune.train import build_game, main as train
from tests.test_eval_data import write_nocaps
from tests.tiny_assets import draw_image


@pytest.fixture(scope="module")
def cache_dir(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "coco"
    extract(["--dataset", "coco", "--annotations", str(tiny.coco_json), "--receiver", str(tiny.clip),
             "--splits", "train", "val", "--out", str(out), "--num_workers", "0", "--batch_size", "5"])
    return out


def test_cached_features_equal_the_image_tower(tiny, cache_dir):
    retriever, _, preprocess = load_clips(ReceiverOptions(receiver=str(tiny.clip)))
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["n"] == 16 and manifest["splits"] == ["train", "val"]
    records = karpathy_records(tiny.coco_json, tiny.coco_root, "val")
    cached = FeatureCache(cache_dir, fingerprint(retriever)).dataset(records)
    images = ImageRecordsDataset(records, preprocess)
    for i in range(len(records)):
        torch.testing.assert_close(cached[i][0], retriever.encode_images(images[i][0][None])[0], rtol=1e-5, atol=1e-6)
    test = FeatureCache(cache_dir, fingerprint(retriever)).dataset(karpathy_records(tiny.coco_json, tiny.coco_root, "test"))
    assert len(test) == 0 and test.n_missing == 4


def test_same_rewards_from_features_and_from_pixels(tiny, cache_dir):
    cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                        "--receiver", str(tiny.clip), "--max_len", "6"])
    game, preprocess = build_game(cfg, load_engine("builtin"))
    records = karpathy_records(tiny.coco_json, tiny.coco_root, "train")[:4]
    pixels = torch.stack([ImageRecordsDataset(records, preprocess)[i][0] for i in range(4)])
    features = torch.stack([FeatureCache(cache_dir, fingerprint(game.receiver.first)).dataset(records)[i][0]
                            for i in range(4)])
    game.eval()
    with torch.no_grad():
        _, from_pixels = game(pixels)
        _, from_features = game(features)
    torch.testing.assert_close(from_features.aux["reward"], from_pixels.aux["reward"], rtol=1e-4, atol=1e-4)
    assert torch.equal(from_features.message, from_pixels.message)


def test_training_from_the_cache_runs_no_image_tower(tiny, cache_dir, tmp_path, monkeypatch):
    from transformers import CLIPModel

    def refuse(*args, **kwargs):
        raise AssertionError("the image tower ran during a cached training step")

    monkeypatch.setattr(CLIPModel, "get_image_features", refuse)
    run_dir = train(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                     "--receiver", str(tiny.clip), "--dataset", "coco", "--annotations", str(tiny.coco_json),
                     "--feature_cache", str(cache_dir), "--batch_size", "4", "--n_epochs", "1", "--lr", "1e-3",
                     "--max_len", "6", "--num_workers", "0", "--checkpoint_dir", str(tmp_path / "run")])
    assert (run_dir / "final.tar").is_file()


def test_cache_of_another_model_or_preprocessing_is_refused(tiny, cache_dir, tmp_path):
    other = tmp_path / "clip"
    shutil.copytree(tiny.clip, other)
    config = json.loads((other / "preprocessor_config.json").read_text())
    config["image_mean"] = [0.5, 0.5, 0.5]
    (other / "preprocessor_config.json").write_text(json.dumps(config))
    retriever, _, _ = load_clips(ReceiverOptions(receiver=str(tiny.clip)))
    expected = fingerprint(retriever)
    with pytest.raises(ValueError, match="another preprocessing"):
        FeatureCache(cache_dir, {**fingerprint(load_clips(ReceiverOptions(receiver=str(other)))[0]),
                                 "model": expected["model"]})
    with torch.no_grad():
        retriever.model.visual_projection.weight.mul_(2)
    with pytest.raises(ValueError, match="another image_tower_sha256"):
        FeatureCache(cache_dir, fingerprint(retriever))
    with pytest.raises(FileNotFoundError, match="extract_features"):
        FeatureCache(tmp_path / "nothing", expected)


def test_same_weights_by_another_path_are_the_same_model(tiny, cache_dir, monkeypatch):
    monkeypatch.chdir(tiny.clip.parent)
    relative = load_clips(ReceiverOptions(receiver=tiny.clip.name))[0]
    assert relative.name != str(tiny.clip)
    FeatureCache(cache_dir, fingerprint(relative))


def test_a_cache_of_other_images_with_the_same_ids_is_refused(tiny, cache_dir, tmp_path):
    cache = FeatureCache(cache_dir, json.loads((cache_dir / "manifest.json").read_text()))
    records = karpathy_records(tiny.coco_json, tiny.coco_root, "train")
    assert np.load(cache_dir / "hashes.npy").shape == (len(cache.rows),)
    cache.verify(records, -1)
    # The same file names and ids, other pictures: a copy of the dataset with two images redrawn.
    other_root = tmp_path / "coco"
    shutil.copytree(tiny.coco_root, other_root)
    redrawn = sorted((other_root / "train2014").iterdir())[:2]
    for path in redrawn:
        draw_image(path, "green", "circle", size=40)
    other = karpathy_records(tiny.coco_json, other_root, "train")
    with pytest.raises(ValueError, match=r"2 of 8 images checked differ .*e\.g\. id .*train2014"):
        cache.verify(other, -1)
    cache.verify(other, 0)  # checking can be turned off
    with pytest.raises(ValueError, match="images checked differ"):
        train(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights), "--receiver", str(tiny.clip),
               "--dataset", "coco", "--annotations", str(tiny.coco_json), "--data_root", str(other_root),
               "--no-include_restval", "--feature_cache", str(cache_dir), "--batch_size", "4",
               "--num_workers", "0", "--checkpoint_dir", str(tmp_path / "run")])


def test_evaluation_from_a_test_set_cache_equals_evaluation_from_images(tiny, tmp_path, monkeypatch):
    from transformers import CLIPModel

    cache = tmp_path / "coco-test"
    extract(["--test_set", "coco", "--data_root", str(tiny.coco_root), "--receiver", str(tiny.clip),
             "--out", str(cache), "--num_workers", "0"])
    assert json.loads((cache / "manifest.json").read_text())["source"] == "coco"
    models = ["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights), "--receiver", str(tiny.clip),
              "--max_len", "8", "--num_workers", "0", "--block_size", "2", "--no-nlg", "--decoding", "greedy",
              "--root", f"coco={tiny.coco_root}", "--data_dir", str(tmp_path)]
    from_images = evaluate([*models, "--test_sets", "coco", "--output_dir", str(tmp_path / "a")])

    def refuse(*args, **kwargs):
        raise AssertionError("the image tower ran on a cached test set")

    monkeypatch.setattr(CLIPModel, "get_image_features", refuse)
    from_cache = evaluate([*models, "--test_sets", "coco", "--output_dir", str(tmp_path / "b"),
                           "--feature_cache", f"coco={cache}"])
    for a, b in zip(from_images, from_cache):
        assert a["n_images"] == b["n_images"] == 4
        assert a["p_at_1"] == pytest.approx(b["p_at_1"]) and a["recall_at_5"] == pytest.approx(b["recall_at_5"])
    assert (tmp_path / "a" / "results.md").read_text() == (tmp_path / "b" / "results.md").read_text()
    write_nocaps(tmp_path / "nocaps", ["near-domain"] * 3)
    with pytest.raises(ValueError, match="not of 'nocaps'"):
        evaluate([*models, "--test_sets", "nocaps-near", "--feature_cache", f"nocaps-near={cache}",
                  "--output_dir", str(tmp_path / "c")])
