"""Computes each image's CLIP embedding once: ``python -m egg_zoo_discritune.extract_features --help``.

The cache (see ``data_loaders/features.py``) then replaces pixels in training (``--feature_cache``):
no JPEG decoding and no image tower during the run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


from egg_zoo_discritune.captioning import encode_images
from egg_zoo_discritune.cli import run as run_cli, start
from egg_zoo_discritune.config import DataOptions, ReceiverOptions, add_options, opt, options_from
from egg_zoo_discritune.data_loaders import dataset_records
from egg_zoo_discritune.data_loaders.features import fingerprint, write_cache
from egg_zoo_discritune.data_loaders.images import ImageRecordsDataset
from egg_zoo_discritune.factory import load_clips

log = logging.getLogger("discritune")


@dataclass
class ExtractOptions:
    """Which images go into the cache, and where it is written."""

    splits: list[str] = opt(["train", "val"], "splits of the dataset to include (one cache for all of them)")
    out: str = opt("features", "cache folder to write")
    batch_size: int = opt(256, "images per batch")
    no_cuda: bool = opt(False, "run on the CPU even when a GPU is available")


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m egg_zoo_discritune.extract_features",
                                     description=__doc__.split("\n")[0])
    for cls in (ExtractOptions, DataOptions, ReceiverOptions):
        add_options(parser, cls)
    namespace = parser.parse_args(sys.argv[1:] if argv is None else argv)
    opts, data = options_from(namespace, ExtractOptions), options_from(namespace, DataOptions)
    device = start(opts.no_cuda)
    retriever, _, preprocess = load_clips(options_from(namespace, ReceiverOptions))
    records = {}
    for split in opts.splits:
        for record in dataset_records(data.dataset, split, data.data_root, data.annotations, data.include_restval):
            records.setdefault(record.image_id, record)
    dataset = ImageRecordsDataset(list(records.values()), preprocess, source=data.dataset)
    encoded = encode_images(dataset, retriever.to(device), None, opts.batch_size, device, data.num_workers)
    out = Path(opts.out)
    write_cache(out, [dataset.records[i].image_id for i in encoded.indices.tolist()], encoded.features,
                {**fingerprint(retriever), "dataset": data.dataset, "splits": opts.splits,
                 "n_skipped": dataset.n_skipped})
    log.info("%d image features written to %s; %d images skipped", len(encoded.indices), out, dataset.n_skipped)
    return out


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
