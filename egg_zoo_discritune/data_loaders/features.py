"""On-disk cache of frozen CLIP image embeddings, memory-mapped, shared by the captioner's prefix and
the retriever: with it, training decodes no JPEG and runs no image tower.

A cache folder holds ``features.npy`` (float32 ``[N, D]``), ``ids.json`` (the image id of each row) and
``manifest.json`` (the model, a SHA-256 of its image-tower weights, the preprocessing, counts). A cache
made with another model or other preprocessing is refused, never silently used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from egg_zoo_discritune.archs.clip import ClipRetriever
from egg_zoo_discritune.data_loaders.images import ImageRecord

MANIFEST, FEATURES, IDS = "manifest.json", "features.npy", "ids.json"
_PREPROCESSING_KEYS = ("size", "crop_size", "image_mean", "image_std", "resample", "do_resize", "do_center_crop",
                       "do_normalize", "do_rescale", "rescale_factor", "do_convert_rgb")


def fingerprint(retriever: ClipRetriever) -> dict:
    """What the cached features depend on: the image tower's weights and the pixel preprocessing."""
    digest = hashlib.sha256()
    model = retriever.model
    tower = {n: p for n, p in model.named_parameters() if n.startswith(("vision_model.", "visual_projection."))}
    for name, tensor in sorted(tower.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    processor = retriever.image_processor.to_dict()
    preprocessing = {k: processor.get(k) for k in _PREPROCESSING_KEYS}
    # Through JSON, as the manifest stores it (tuples become lists), so the two compare equal.
    return json.loads(json.dumps({"model": retriever.name, "image_tower_sha256": digest.hexdigest(),
                                  "preprocessing": preprocessing}))


def write_cache(directory: Path, ids: Sequence[str], chunks: Sequence[np.ndarray], manifest: dict) -> None:
    """Writes the rows of ``chunks`` (arrays ``[n_i, D]``, e.g. the parts written by several processes)
    one after the other, so the whole cache never has to be in memory."""
    n, dim = sum(len(c) for c in chunks), chunks[0].shape[1]
    if n != len(ids):
        raise ValueError(f"{len(ids)} image ids for {n} feature rows")
    directory.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(directory / FEATURES, mode="w+", dtype=np.float32, shape=(n, dim))
    row = 0
    for chunk in chunks:
        array[row:row + len(chunk)] = chunk
        row += len(chunk)
    array.flush()
    (directory / IDS).write_text(json.dumps(list(ids)))
    (directory / MANIFEST).write_text(json.dumps({**manifest, "n": n, "dim": dim}, indent=2))


def read_part(directory: Path) -> tuple[list[str], np.ndarray, dict]:
    """The ids, memory-mapped features and manifest of a cache folder, unchecked (for merging parts)."""
    return (json.loads((directory / IDS).read_text()), np.load(directory / FEATURES, mmap_mode="r"),
            json.loads((directory / MANIFEST).read_text()))


class FeatureCache:
    def __init__(self, directory: Path, expected: dict):
        self.directory = Path(directory)
        if not (self.directory / MANIFEST).is_file():
            raise FileNotFoundError(f"no feature cache at {self.directory} (expected {MANIFEST}); make one with "
                                    "python -m egg_zoo_discritune.extract_features")
        self.manifest = json.loads((self.directory / MANIFEST).read_text())
        stale = [k for k in ("model", "image_tower_sha256", "preprocessing") if self.manifest.get(k) != expected[k]]
        if stale:
            raise ValueError(f"{self.directory}: the cache was made with another {' and '.join(stale)} "
                             f"({ {k: self.manifest.get(k) for k in stale} } vs { {k: expected[k] for k in stale} }); "
                             "extract the features again for this model")
        self.features = np.load(self.directory / FEATURES, mmap_mode="r")
        self.rows = {image_id: row for row, image_id in enumerate(json.loads((self.directory / IDS).read_text()))}

    def dataset(self, records: Sequence[ImageRecord], source: str = "") -> "CachedFeaturesDataset":
        return CachedFeaturesDataset(self, records, source)


class CachedFeaturesDataset(Dataset):
    """Item ``i``: ``(features [D], i)`` for the records whose image is in the cache; the others (missing
    or undecodable when the cache was made) are counted in ``n_missing``."""

    def __init__(self, cache: FeatureCache, records: Sequence[ImageRecord], source: str = ""):
        self.cache = cache
        self.records = [r for r in records if r.image_id in cache.rows]
        self.n_missing = len(records) - len(self.records)
        self.n_undecodable = 0
        self.source = source

    @property
    def n_skipped(self) -> int:
        return self.n_missing

    def __len__(self) -> int:
        return len(self.records)

    def features(self) -> torch.Tensor:
        """``[len(self), D]``: every record's features, in record order."""
        rows = [self.cache.rows[r.image_id] for r in self.records]
        return torch.from_numpy(np.asarray(self.cache.features[rows], dtype=np.float32)).reshape(len(rows), -1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.cache.rows[self.records[index].image_id]
        return torch.from_numpy(np.array(self.cache.features[row])), index


class PixelsWithFeatures(Dataset):
    """Item ``i``: ``((the sender's pixels, the retriever's cached features), i)``, for a sender that reads
    its own pixels (BLIP) while the retriever side comes from the cache; ``None`` if the image does not
    decode. ``pixels`` and ``features`` hold the same records."""

    def __init__(self, pixels: Dataset, features: CachedFeaturesDataset, n_missing: int = 0):
        self.pixels, self.features = pixels, features
        self.records = features.records
        self.n_missing = n_missing
        self.source = features.source

    @property
    def n_undecodable(self) -> int:
        return self.pixels.n_undecodable

    @property
    def n_skipped(self) -> int:
        return self.n_missing + self.n_undecodable

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        item = self.pixels[index]
        return None if item is None else ((item[0], self.features[index][0]), index)
