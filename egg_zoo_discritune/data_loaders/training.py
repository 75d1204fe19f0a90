"""The training run's data: where its images come from (img2dataset shards streamed, a feature cache, or
decoded pixels), and which images validate it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from egg_zoo_discritune.data_loaders import dataset_records
from egg_zoo_discritune.data_loaders.features import FeatureCache, PixelsWithFeatures
from egg_zoo_discritune.data_loaders.images import ImageRecordsDataset, image_loader
from egg_zoo_discritune.data_loaders.options import DataOptions
from egg_zoo_discritune.data_loaders.streaming import ShardStream, find_shards, stream_loader
from egg_zoo_discritune.engine.distributed import DistributedContext

Preprocess = Callable[[Any], Any]


@dataclass
class RunData:
    train_set: Any
    train_data: Any
    val_set: Optional[Any] = None
    val_data: Optional[Any] = None

    def report_skipped(self, log) -> None:
        for name, dataset in (("train", self.train_set), ("validation", self.val_set)):
            if dataset is not None and dataset.n_skipped:
                unsupported = dataset.n_unsupported_mode
                log.warning("%s: skipped %d images (%d missing, %d undecodable%s)", name, dataset.n_skipped,
                            dataset.n_missing, dataset.n_undecodable,
                            f", of which {unsupported} in an image mode with no RGB conversion" if unsupported else "")


def validation_source(data: DataOptions) -> Optional[tuple[Optional[str], Optional[str]]]:
    """``(annotations, data_root)`` of the validation images, or None when there are none to read:
    generic data and img2dataset folders hold one split, so their validation images come apart."""
    if data.dataset == "generic":
        return (data.val_annotations, None) if data.val_annotations else None
    if data.dataset == "conceptual" and (data.val_annotations or data.stream):
        return (None, data.val_annotations) if data.val_annotations else None
    return data.annotations, data.data_root


def split_dataset(data: DataOptions, split: str, annotations: Optional[str], data_root: Optional[str], limit: int,
                  preprocess: Preprocess, cache: Optional[FeatureCache], sender_pixels: Optional[Preprocess] = None):
    """One split's images: pixels, cached features, or (a sender reading its own pixels with a cache) both."""
    records = dataset_records(data.dataset, split, data_root, annotations, data.include_restval)
    records = records[:limit] if limit else records
    source = f"{data.dataset}:{split}"
    if cache is None:
        return ImageRecordsDataset(records, preprocess, source=source)
    cache.verify(records, data.verify_cache)
    if sender_pixels is None:
        return cache.dataset(records, source)
    pixels = ImageRecordsDataset(cache.dataset(records).records, sender_pixels, source=source)
    return PixelsWithFeatures(pixels, cache.dataset(pixels.records, source), n_missing=len(records) - len(pixels))


def run_data(data: DataOptions, batch_size: int, seed: int, validate: bool, preprocess: Preprocess,
             cache: Optional[FeatureCache], sender_pixels: Optional[Preprocess],
             context: DistributedContext) -> RunData:
    """The training loader (global batches of ``batch_size``, shuffled per epoch from ``seed``) and, when
    ``validate``, the validation loader (consecutive blocks of ``batch_size`` candidates)."""
    if data.stream:
        if data.dataset != "conceptual" or cache is not None or not data.data_root:
            raise ValueError("--stream reads the img2dataset shards in --data_root of --dataset conceptual, from "
                             "images (not with --feature_cache)")
        train_set = ShardStream(find_shards(Path(data.data_root)), preprocess, batch_size, seed, context,
                                data.shuffle_buffer, data.num_workers, f"conceptual:{data.train_split}")
        train_data = stream_loader(train_set, data.num_workers)
    else:
        train_set = split_dataset(data, data.train_split, data.annotations, data.data_root, data.max_train_images,
                                  preprocess, cache, sender_pixels)
        train_data = image_loader(train_set, batch_size, shuffle_seed=seed, num_workers=data.num_workers,
                                  context=context)
    if len(train_data) == 0:
        raise ValueError(f"{data.dataset}: fewer training images than one batch of {batch_size}")
    source = validation_source(data)
    if not validate or source is None:
        return RunData(train_set, train_data)
    val_set = split_dataset(data, data.val_split, *source, data.max_val_images, preprocess, cache, sender_pixels)
    if len(val_set) < batch_size:
        raise ValueError(f"{len(val_set)} validation images, fewer than one block of {batch_size} candidates; "
                         "lower --batch_size or add images")
    return RunData(train_set, train_data, val_set,
                   image_loader(val_set, batch_size, num_workers=data.num_workers, context=context))
