"""nocaps validation: ``nocaps_val_4500_captions.json`` (COCO format with a per-image ``domain``) and
the Open Images validation images under ``<root>/validation/`` (or directly under the root).

Splits are the domains, counted from the file: ``in-domain``, ``near-domain``, ``out-domain``
(the paper reports near and out).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from egg_zoo_discritune.data_loaders.images import ImageRecord

ANNOTATIONS = "nocaps_val_4500_captions.json"
DOMAINS = ("in-domain", "near-domain", "out-domain")
DOWNLOAD_HINT = ("nocaps_val_4500_captions.json is on nocaps.org (download page); the images are the Open Images "
                 "V4 validation images named in its coco_url fields, saved as <root>/validation/<file_name>")


def nocaps_records(root: Path, domain: str) -> list[ImageRecord]:
    path = root / ANNOTATIONS
    if not path.is_file():
        raise FileNotFoundError(f"nocaps annotations not found: {path}. Download: {DOWNLOAD_HINT}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise ValueError(f"{path}: expected a COCO-format object with 'images' (with 'domain') and 'annotations'")
    domains = Counter(image.get("domain") for image in data["images"])
    if domain not in domains:
        raise ValueError(f"{path}: no images of domain {domain!r}; the file has {dict(domains)}")
    captions = defaultdict(list)
    for annotation in data["annotations"]:
        captions[annotation["image_id"]].append(annotation["caption"].strip())
    folder = root / "validation" if (root / "validation").is_dir() else root
    return [ImageRecord(folder / image["file_name"], str(image["id"]), captions[image["id"]])
            for image in data["images"] if image.get("domain") == domain]
