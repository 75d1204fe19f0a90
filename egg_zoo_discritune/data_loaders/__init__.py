"""Dataset readers: each returns ``ImageRecord``s (path, id, reference captions) in file order."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from egg_zoo_discritune.data_loaders.coco import karpathy_records
from egg_zoo_discritune.data_loaders.conceptual import conceptual_records
from egg_zoo_discritune.data_loaders.generic import generic_records
from egg_zoo_discritune.data_loaders.images import ImageRecord

DATASETS = ("coco", "conceptual", "generic")


def dataset_records(dataset: str, split: str, data_root: Optional[str], annotations: Optional[str],
                    include_restval: bool = False) -> list[ImageRecord]:
    """``coco``: ``annotations`` = dataset_coco.json, ``data_root`` = COCO image root;
    ``conceptual``: ``data_root`` = folder with the TSVs and image folders;
    ``generic``: ``annotations`` (or ``data_root``) = a folder of images or a JSONL/CSV manifest (``split`` unused)."""
    if dataset == "coco":
        if not annotations:
            raise ValueError("--dataset coco needs --annotations PATH/dataset_coco.json")
        root = Path(data_root) if data_root else Path(annotations).parent
        return karpathy_records(Path(annotations), root, split, include_restval)
    if dataset == "conceptual":
        if not data_root:
            raise ValueError("--dataset conceptual needs --data_root (the folder with the TSVs and image folders)")
        return conceptual_records(Path(data_root), split)
    if dataset == "generic":
        source = annotations or data_root
        if not source:
            raise ValueError("--dataset generic needs --annotations (a JSONL/CSV manifest) or --data_root (a folder)")
        return generic_records(Path(source))
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
