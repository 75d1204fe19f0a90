"""COCO with Karpathy's splits: ``dataset_coco.json`` + the COCO image folders (``train2014/``, ``val2014/``).

Image path: ``<image_root>/<filepath>/<filename>``. ``restval`` is its own split; the paper trains on
Karpathy ``train`` (82,783 images), and ``include_restval`` adds ``restval`` to it (113,287 images).
The same reader serves Flickr30k's ``dataset_flickr30k.json`` (no ``filepath``: ``<image_root>/<filename>``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from egg_zoo_discritune.data_loaders.images import ImageRecord

DOWNLOAD_HINT = ("the Karpathy split file dataset_coco.json comes in caption_datasets.zip "
                 "(Karpathy's NeuralTalk page; mirrors on Kaggle 'karpathy-splits'), the images from "
                 "cocodataset.org (train2014.zip, val2014.zip) unpacked under the image root")


def read_karpathy_json(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"Karpathy split file not found: {path}. Download: {DOWNLOAD_HINT}")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{path}: expected a Karpathy split file, a JSON object with an 'images' list")
    for i, image in enumerate(images):
        missing = {"filename", "split", "sentences"} - set(image)
        if missing:
            raise ValueError(f"{path}: images[{i}] lacks the field(s) {sorted(missing)}")
    return images


def karpathy_records(annotations: Path, image_root: Path, split: str,
                     include_restval: bool = False) -> list[ImageRecord]:
    """The images of ``split`` (``train``, ``val``, ``test`` or ``restval``) in file order."""
    images = read_karpathy_json(annotations)
    counts = Counter(image["split"] for image in images)
    if split not in counts:
        raise ValueError(f"{annotations}: no split {split!r}; the file has {dict(counts)}")
    wanted = {split, "restval"} if split == "train" and include_restval else {split}
    records = []
    for image in images:
        if image["split"] not in wanted:
            continue
        captions = [s["raw"].strip() for s in image["sentences"] if s.get("raw", "").strip()]
        image_id = str(image.get("cocoid", image.get("imgid", image["filename"])))
        records.append(ImageRecord(image_root / image.get("filepath", "") / image["filename"], image_id, captions))
    return records
