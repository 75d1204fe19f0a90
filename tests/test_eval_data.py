"""Every test set of the paper read from small files in its real format."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from egg_zoo_discritune.data_loaders.concadia import concadia_records
from egg_zoo_discritune.data_loaders.conceptual import conceptual_records
from egg_zoo_discritune.data_loaders.eval_sets import EVAL_SETS, parse_eval_set
from egg_zoo_discritune.data_loaders.images import ImageRecordsDataset
from egg_zoo_discritune.data_loaders.nocaps import nocaps_records
from tests.tiny_assets import draw_image

CONCADIA_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "concadia-sample"


def _png_bytes(colour="red", shape="circle"):
    path = Path("/tmp") / f"discritune_{colour}_{shape}.png"
    draw_image(path, colour, shape)
    return path.read_bytes()


def write_nocaps(root: Path, domains: list[str], missing: int = 0) -> None:
    (root / "validation").mkdir(parents=True)
    images = [{"id": i, "open_images_id": f"{i:016x}", "file_name": f"{i:016x}.jpg", "domain": d, "height": 48,
               "width": 56} for i, d in enumerate(domains)]
    # Annotations are not in image order in every copy: group them by image_id, never by position.
    annotations = [{"image_id": i, "id": 10 * i + k, "caption": f"caption {k} of image {i}"}
                   for k in range(10) for i in range(len(domains))]
    (root / "nocaps_val_4500_captions.json").write_text(json.dumps(
        {"licenses": [], "info": {"version": "0.1"}, "images": images, "annotations": annotations}))
    for image in images[missing:]:
        draw_image(root / "validation" / image["file_name"], "blue", "square", fmt="JPEG")


def test_nocaps_domains_counts_and_references(tmp_path):
    write_nocaps(tmp_path, ["in-domain", "near-domain", "out-domain", "near-domain", "out-domain"], missing=1)
    near = nocaps_records(tmp_path, "near-domain")
    assert [r.image_id for r in near] == ["1", "3"]
    assert near[0].captions == [f"caption {k} of image 1" for k in range(10)]
    assert len(nocaps_records(tmp_path, "out-domain")) == 2
    in_domain = ImageRecordsDataset(nocaps_records(tmp_path, "in-domain"), lambda image: image)
    assert len(in_domain) == 0 and in_domain.n_missing == 1
    with pytest.raises(ValueError, match=r"no images of domain 'far-domain'.*'near-domain': 2"):
        nocaps_records(tmp_path, "far-domain")


def test_flickr30k_karpathy_file(tmp_path):
    (tmp_path / "flickr30k-images").mkdir()
    images = []
    for i, split in enumerate(["train", "val", "test", "test"]):
        draw_image(tmp_path / "flickr30k-images" / f"{1000 + i}.jpg", "green", "circle", fmt="JPEG")
        images.append({"filename": f"{1000 + i}.jpg", "imgid": i, "split": split, "sentids": [i],
                       "sentences": [{"raw": f"a photo {i}", "tokens": ["a", "photo"], "imgid": i, "sentid": i}]})
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    eval_set, split = parse_eval_set("flickr30k")
    test = eval_set.read(tmp_path, split)
    assert [r.path.name for r in test] == ["1002.jpg", "1003.jpg"] and test[0].captions == ["a photo 2"]
    eval_set, split = parse_eval_set("flickr30k:val")
    assert len(eval_set.read(tmp_path, split)) == 1


def test_conceptual_img2dataset_webdataset_shards(tmp_path):
    for shard in range(2):
        with tarfile.open(tmp_path / f"{shard:05d}.tar", "w") as archive:
            for i in range(2):
                key = f"{shard:05d}{i:04d}"
                members = {f"{key}.jpg": _png_bytes(),
                           f"{key}.json": json.dumps({"url": f"http://x/{key}", "caption": f"json caption {key}",
                                                      "key": key, "status": "success"}).encode()}
                if i == 0:
                    members[f"{key}.txt"] = f"txt caption {key}".encode()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    records = conceptual_records(tmp_path, "val")
    assert [r.image_id for r in records] == ["000000000", "000000001", "000010000", "000010001"]
    assert records[0].captions == ["txt caption 000000000"] and records[1].captions == ["json caption 000000001"]
    dataset = ImageRecordsDataset(records, lambda image: image.size)
    assert len(dataset) == 4 and dataset[3] == ((56, 48), 3)


def test_conceptual_img2dataset_files_layout(tmp_path):
    (tmp_path / "00000").mkdir()
    for i in range(3):
        draw_image(tmp_path / "00000" / f"00000000{i}.jpg", "red", "square", fmt="JPEG")
        (tmp_path / "00000" / f"00000000{i}.txt").write_text(f"caption {i}")
    (tmp_path / "00000_stats.json").write_text("{}")
    records = conceptual_records(tmp_path, "val")
    assert [r.captions for r in records] == [["caption 0"], ["caption 1"], ["caption 2"]]
    with pytest.raises(FileNotFoundError, match="expected Validation_GCC"):
        conceptual_records(tmp_path / "00000", "val")


def test_concadia_captions_or_descriptions(tmp_path):
    (tmp_path / "images").mkdir()
    images = []
    for i, split in enumerate(["train", "test", "test"]):
        draw_image(tmp_path / "images" / f"{i}.jpg", "yellow", "circle", fmt="JPEG")
        images.append({"article_id": "A", "filename": f"{i}.jpg", "orig_filename": "u", "split": split,
                       "caption": {"raw": f"caption {i}", "tokens": []},
                       "description": {"raw": f"description {i}", "tokens": []}, "context": {"raw": "", "tokens": []}})
    (tmp_path / "wiki_split.json").write_text(json.dumps({"images": images}))
    assert [r.captions for r in concadia_records(tmp_path, "test")] == [["caption 1"], ["caption 2"]]
    assert [r.captions for r in EVAL_SETS["concadia-description"].read(tmp_path, "test")] == \
        [["description 1"], ["description 2"]]


@pytest.mark.skipif(not CONCADIA_SAMPLE.is_dir(), reason="the real Concadia sample (../shared/data) is not here")
def test_real_concadia_sample_loads():
    records = concadia_records(CONCADIA_SAMPLE, "test")
    assert len(records) == 16 and all(r.captions for r in records)
    dataset = ImageRecordsDataset(records, lambda image: image.size)
    assert dataset.n_missing == 0 and dataset[0][0] == (256, 256)
