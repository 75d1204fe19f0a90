"""The paper's test sets, each read from its own files under ``<data_dir>/<folder>`` (or a root given
per set). A set is named ``NAME`` or ``NAME:SPLIT`` (e.g. ``flickr30k:val``, the paper's tuning set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from egg_zoo_discritune.data_loaders.coco import karpathy_records
from egg_zoo_discritune.data_loaders.concadia import concadia_records
from egg_zoo_discritune.data_loaders.conceptual import conceptual_records
from egg_zoo_discritune.data_loaders.generic import manifest_records
from egg_zoo_discritune.data_loaders.images import ImageRecord
from egg_zoo_discritune.data_loaders.nocaps import nocaps_records


def _flickr(root: Path, split: str) -> list[ImageRecord]:
    images = next((root / d for d in ("flickr30k-images", "Images") if (root / d).is_dir()), root)
    return karpathy_records(root / "dataset_flickr30k.json", images, split)


@dataclass(frozen=True)
class EvalSet:
    name: str
    folder: str
    split: str
    read: Callable[[Path, str], list[ImageRecord]]
    title: str

    def root(self, roots: Sequence[str], data_dir: str) -> Path:
        """Where the set lives: ``--root NAME=PATH`` by its name or its folder, else ``<data_dir>/<folder>``."""
        given = dict(r.split("=", 1) for r in roots)
        return Path(given.get(self.name) or given.get(self.folder) or Path(data_dir) / self.folder).expanduser()


EVAL_SETS = {s.name: s for s in [
    EvalSet("coco", "coco", "test", lambda root, split: karpathy_records(root / "dataset_coco.json", root, split),
            "COCO"),
    EvalSet("conceptual", "conceptual", "val", conceptual_records, "ConCap"),
    EvalSet("flickr30k", "flickr30k", "test", _flickr, "Flickr"),
    EvalSet("nocaps-near", "nocaps", "near-domain", nocaps_records, "nocaps near"),
    EvalSet("nocaps-out", "nocaps", "out-domain", nocaps_records, "nocaps out"),
    EvalSet("nocaps-in", "nocaps", "in-domain", nocaps_records, "nocaps in"),
    EvalSet("concadia", "concadia", "test", concadia_records, "Concadia"),
    EvalSet("concadia-description", "concadia", "test",
            lambda root, split: concadia_records(root, split, "description"), "Concadia (descr.)"),
    # The offline miniature (egg_zoo_discritune.toyworld): <root>/<split>.jsonl manifests.
    EvalSet("toyworld", "toyworld", "test", lambda root, split: manifest_records(root / f"{split}.jsonl"),
            "toy in-domain"),
    EvalSet("toyworld-ood", "toyworld", "ood", lambda root, split: manifest_records(root / f"{split}.jsonl"),
            "toy out-of-domain"),
]}
PAPER_SETS = ("coco", "conceptual", "flickr30k", "nocaps-near", "nocaps-out", "concadia")


def parse_eval_set(spec: str) -> tuple[EvalSet, str]:
    name, _, split = spec.partition(":")
    if name not in EVAL_SETS:
        raise ValueError(f"unknown test set {name!r}; expected one of {sorted(EVAL_SETS)}")
    return EVAL_SETS[name], split or EVAL_SETS[name].split
