import csv
import json
import zlib

import pytest
import torch

from egg_zoo_discritune.config import options_from, parse_config
from egg_zoo_discritune.data_loaders import dataset_records
from egg_zoo_discritune.data_loaders.coco import karpathy_records
from egg_zoo_discritune.data_loaders.conceptual import conceptual_records
from egg_zoo_discritune.data_loaders.generic import generic_records
from egg_zoo_discritune.data_loaders.images import BlockSampler, ImageRecordsDataset, image_loader
from egg_zoo_discritune.evaluate import EvalOptions, build_parser as eval_parser
from egg_zoo_discritune.metrics.retrieval import precision_at_1
from tests.tiny_assets import draw_image, write_images


def _pixels(image):
    return torch.tensor(list(image.resize((4, 4)).getdata()), dtype=torch.float32).T.reshape(3, 4, 4)


def test_karpathy_splits_and_restval(tiny):
    root = tiny.coco_root
    assert len(karpathy_records(tiny.coco_json, root, "train")) == 8
    assert len(karpathy_records(tiny.coco_json, root, "train", include_restval=True)) == 12
    test = karpathy_records(tiny.coco_json, root, "test")
    assert len(test) == 4 and all(r.path.is_file() for r in test)
    assert test[0].path.parent.name == "val2014" and test[0].image_id == "100016"
    assert test[0].captions == ["A red circle.", "a circle that is red"]


def test_karpathy_errors_name_the_file(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"no split 'testing'.*'train': 8"):
        karpathy_records(tiny.coco_json, tiny.coco_root, "testing")
    bad = tmp_path / "dataset_coco.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="dataset_coco.json: not valid JSON"):
        karpathy_records(bad, tmp_path, "train")
    bad.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "train"}]}))
    with pytest.raises(ValueError, match=r"images\[0\] lacks.*sentences"):
        karpathy_records(bad, tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="caption_datasets.zip"):
        karpathy_records(tmp_path / "missing.json", tmp_path, "train")


def test_generic_folder_jsonl_and_csv(tmp_path):
    write_images(tmp_path / "imgs" / "sub", 3)
    assert [r.image_id for r in generic_records(tmp_path / "imgs")] == ["sub/img_0.png", "sub/img_1.png", "sub/img_2.png"]
    (tmp_path / "m.jsonl").write_text('{"image": "imgs/sub/img_0.png", "captions": ["a", "b"]}\n\n'
                                      '{"path": "imgs/sub/img_1.png", "caption": "c"}\n')
    records = generic_records(tmp_path / "m.jsonl")
    assert [r.captions for r in records] == [["a", "b"], ["c"]]
    assert records[0].path == tmp_path / "imgs/sub/img_0.png"
    with open(tmp_path / "m.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file_name", "captions"], ["imgs/sub/img_2.png", "x|y"]])
    assert generic_records(tmp_path / "m.csv")[0].captions == ["x", "y"]
    (tmp_path / "bad.jsonl").write_text('{"img": "a.png"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: no image path"):
        generic_records(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="needs --annotations"):
        dataset_records("generic", "train", None, None)


def test_conceptual_tsv_with_both_naming_schemes(tmp_path):
    rows = [("a photo of a cat", "http://x/1.jpg"), ("a dog", "http://x/2.jpg"), ("gone", "http://x/3.jpg")]
    with open(tmp_path / "Validation_GCC-1.1.0-Validation.tsv", "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows(rows)
    (tmp_path / "validation").mkdir()
    crc = [str(zlib.crc32(url.encode()) & 0xFFFFFFFF) for _, url in rows]
    draw_image(tmp_path / "validation" / f"0_{crc[0]}", "red", "circle", fmt="JPEG")       # the authors' naming, no extension
    draw_image(tmp_path / "validation" / f"{crc[1]}.jpg", "blue", "square", fmt="JPEG")  # crc32 only
    records = conceptual_records(tmp_path, "val")
    assert [r.captions for r in records] == [["a photo of a cat"], ["a dog"], ["gone"]]
    dataset = ImageRecordsDataset(records, _pixels)
    assert len(dataset) == 2 and dataset.n_missing == 1
    with pytest.raises(ValueError, match="splits"):
        conceptual_records(tmp_path, "test")


def test_missing_and_corrupt_images_are_skipped_and_counted(tmp_path):
    write_images(tmp_path, 5)
    (tmp_path / "img_3.png").write_bytes(b"not an image")
    records = generic_records(tmp_path)
    (tmp_path / "img_4.png").unlink()
    dataset = ImageRecordsDataset(records, _pixels)
    assert len(dataset) == 4 and dataset.n_missing == 1
    batches = list(image_loader(dataset, batch_size=2, drop_last=False))
    assert [b[1].tolist() for b in batches] == [[0, 1], [2]]
    list(image_loader(dataset, batch_size=2, drop_last=False))
    assert dataset.n_undecodable == 1 and dataset.n_skipped == 2


def test_epoch_shuffle_is_a_function_of_seed_and_epoch():
    sampler = BlockSampler(10, block_size=5, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(10)) and first != second
    resumed = BlockSampler(10, block_size=5, seed=3)
    resumed.set_epoch(1)
    assert list(resumed) == second


def test_processes_share_each_global_batch():
    single = list(BlockSampler(11, block_size=4, seed=5))
    ranks = [list(BlockSampler(11, block_size=4, seed=5, rank=r, world_size=2)) for r in range(2)]
    # Two global batches of 4 (the tail of 3 is dropped); rank r holds the r-th half of each.
    assert len(single) == 8 and all(len(r) == 4 for r in ranks)
    for b in range(2):
        assert single[4 * b:4 * b + 4] == ranks[0][2 * b:2 * b + 2] + ranks[1][2 * b:2 * b + 2]
    assert list(BlockSampler(7, block_size=2, rank=1, world_size=2)) == [1, 3, 5]
    with pytest.raises(ValueError, match="cannot be split evenly over 3"):
        BlockSampler(10, block_size=4, world_size=3)


def test_degenerate_batches_are_refused_or_never_scored(tmp_path):
    with pytest.raises(ValueError, match="--batch_size 1: .* at least 2"):
        parse_config(["--batch_size", "1"])
    with pytest.raises(ValueError, match="--block_size 1: a P@1 block needs the target and at least one"):
        options_from(eval_parser().parse_args(["--block_size", "1"]), EvalOptions)
    # A batch in which one image alone decoded is dropped, not scored as a sure hit.
    write_images(tmp_path, 4)
    (tmp_path / "img_1.png").write_bytes(b"not an image")
    dataset = ImageRecordsDataset(generic_records(tmp_path), _pixels)
    batches = list(image_loader(dataset, batch_size=2))
    assert [b[1].tolist() for b in batches] == [[2, 3]]
    # The evaluation's last partial block (here one image) is left out of P@1.
    features = torch.eye(5)
    assert precision_at_1(features, features, lambda t, i: t @ i.T, block_size=2) == \
        {"p_at_1": 1.0, "n_blocks": 2, "n_dropped": 1}
