"""Concadia: ``<root>/wiki_split.json`` (``images[]`` with ``filename``, ``caption.raw``,
``description.raw``, ``split``) and the images in ``<root>/images/``.

The references are the captions or the descriptions (alt text); the paper reports both.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from egg_zoo_discritune.data_loaders.images import ImageRecord

ANNOTATIONS = "wiki_split.json"
REFERENCE_FIELDS = ("caption", "description")
DOWNLOAD_HINT = "wiki_split.json and resized.zip (unpacked as images/) are linked from github.com/elisakreiss/concadia"


def concadia_records(root: Path, split: str, references: str = "caption") -> list[ImageRecord]:
    if references not in REFERENCE_FIELDS:
        raise ValueError(f"Concadia references are {REFERENCE_FIELDS}, not {references!r}")
    path = root / ANNOTATIONS
    if not path.is_file():
        raise FileNotFoundError(f"Concadia annotations not found: {path}. Download: {DOWNLOAD_HINT}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected a JSON object with an 'images' list")
    splits = Counter(image.get("split") for image in data["images"])
    if split not in splits:
        raise ValueError(f"{path}: no split {split!r}; the file has {dict(splits)}")
    records = []
    for i, image in enumerate(data["images"]):
        if image.get("split") != split:
            continue
        text = (image.get(references) or {}).get("raw", "").strip()
        if "filename" not in image:
            raise ValueError(f"{path}: images[{i}] has no 'filename'")
        records.append(ImageRecord(root / "images" / image["filename"], image["filename"], [text] if text else []))
    return records
