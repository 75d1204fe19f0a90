"""On-disk cache of frozen CLIP image embeddings, memory-mapped, shared by the captioner's prefix and
the retriever: with it, training decodes no JPEG and runs no image tower.

A cache folder holds ``features.npy`` (float32 ``[N, D]``), ``ids.json`` (the image id of each row),
``hashes.npy`` (uint64 ``[N]``, the ``content_hash`` of each image file's bytes, computed while extracting)
and ``manifest.json`` (the model's name, a SHA-256 of its image-tower weights, the preprocessing, counts).
A cache made with other image-tower weights or other preprocessing is refused, whatever the model's path
or name; so is one whose images differ from the dataset's for the same ids (checked on a sample of the
images at start, ``--verify_cache``, as hashing 3M files would take longer than the run it saves).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from egg_zoo_discritune.archs.clip import ClipRetriever
from egg_zoo_discritune.data_loaders.images import ImageRecord, content_hash, read_image_bytes

log = logging.getLogger(__name__)
MANIFEST, FEATURES, IDS, HASHES = "manifest.json", "features.npy", "ids.json", "hashes.npy"
# What a cache is checked against; the model's name (a path as typed, or a hub id) is only recorded.
IDENTITY = ("image_tower_sha256", "preprocessing")
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


def write_cache(directory: Path, ids: Sequence[str], chunks: Sequence[np.ndarray], hashes: np.ndarray,
                manifest: dict) -> None:
    """Writes the rows of ``chunks`` (arrays ``[n_i, D]``, e.g. the parts written by several processes)
    one after the other, so the whole cache never has to be in memory; ``hashes``: each row's image hash."""
    n, dim = sum(len(c) for c in chunks), chunks[0].shape[1]
    if not n == len(ids) == len(hashes):
        raise ValueError(f"{len(ids)} image ids and {len(hashes)} hashes for {n} feature rows")
    directory.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(directory / FEATURES, mode="w+", dtype=np.float32, shape=(n, dim))
    row = 0
    for chunk in chunks:
        array[row:row + len(chunk)] = chunk
        row += len(chunk)
    array.flush()
    (directory / IDS).write_text(json.dumps(list(ids)))
    np.save(directory / HASHES, np.asarray(hashes, dtype=np.uint64))
    (directory / MANIFEST).write_text(json.dumps({**manifest, "n": n, "dim": dim,
                                                  "content_hash": "blake2b-64 of each image file's bytes"}, indent=2))


def read_part(directory: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """The ids, memory-mapped features, hashes and manifest of a cache folder, unchecked (for merging parts)."""
    return (json.loads((directory / IDS).read_text()), np.load(directory / FEATURES, mmap_mode="r"),
            np.load(directory / HASHES), json.loads((directory / MANIFEST).read_text()))


class FeatureCache:
    def __init__(self, directory: Path, expected: dict):
        self.directory = Path(directory)
        if not (self.directory / MANIFEST).is_file():
            raise FileNotFoundError(f"no feature cache at {self.directory} (expected {MANIFEST}); make one with "
                                    "python -m egg_zoo_discritune.extract_features")
        self.manifest = json.loads((self.directory / MANIFEST).read_text())
        stale = [k for k in IDENTITY if self.manifest.get(k) != expected[k]]
        if stale:
            raise ValueError(f"{self.directory}: the cache was made with another {' and '.join(stale)} "
                             f"({ {k: self.manifest.get(k) for k in stale} } vs { {k: expected[k] for k in stale} }); "
                             "extract the features again for this model")
        if not (self.directory / HASHES).is_file():
            raise ValueError(f"{self.directory}: no {HASHES} (a cache made before images were fingerprinted), so "
                             "its images cannot be checked; extract the features again")
        self.features = np.load(self.directory / FEATURES, mmap_mode="r")
        self.hashes = np.load(self.directory / HASHES)
        self.rows = {image_id: row for row, image_id in enumerate(json.loads((self.directory / IDS).read_text()))}

    def dataset(self, records: Sequence[ImageRecord], source: str = "") -> "CachedFeaturesDataset":
        return CachedFeaturesDataset(self, records, source)

    def verify(self, records: Sequence[ImageRecord], sample: int) -> None:
        """Hashes ``sample`` of ``records`` (spread over them, seeded; -1: all) and refuses the cache if any
        differs from the image the cache was made from. Records whose file is gone are not checked."""
        cached = [r for r in records if r.image_id in self.rows]
        if sample >= 0 and sample < len(cached):
            cached = random.Random(0).sample(cached, sample)
        archives: dict[Path, tarfile.TarFile] = {}
        checked, differ = 0, []
        for record in cached:
            try:
                data = read_image_bytes(record, archives)
            except (OSError, KeyError, tarfile.TarError):
                continue
            checked += 1
            if content_hash(data) != int(self.hashes[self.rows[record.image_id]]):
                differ.append(record)
        for archive in archives.values():
            archive.close()
        if differ:
            example = differ[0]
            raise ValueError(f"{self.directory}: {len(differ)} of {checked} images checked differ from those the "
                             f"cache was made from (e.g. id {example.image_id!r}: {example.path}"
                             f"{f'[{example.member}]' if example.member else ''}); the cache belongs to other "
                             "images with the same ids: extract the features again")
        if cached and not checked:
            log.warning("%s: none of the %d images sampled to check the cache could be read", self.directory,
                        len(cached))


class CachedFeaturesDataset(Dataset):
    """Item ``i``: ``(features [D], i)`` for the records whose image is in the cache; the others (missing
    or undecodable when the cache was made) are counted in ``n_missing``."""

    def __init__(self, cache: FeatureCache, records: Sequence[ImageRecord], source: str = ""):
        self.cache = cache
        self.records = [r for r in records if r.image_id in cache.rows]
        self.n_missing = len(records) - len(self.records)
        self.n_undecodable = self.n_unsupported_mode = 0  # nothing is decoded
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
    def n_unsupported_mode(self) -> int:
        return self.pixels.n_unsupported_mode

    @property
    def n_skipped(self) -> int:
        return self.n_missing + self.n_undecodable

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        item = self.pixels[index]
        return None if item is None else ((item[0], self.features[index][0]), index)
