"""Computes each image's CLIP embedding once: ``python -m egg_zoo_discritune.extract_features --help``.

The cache (see ``data_loaders/features.py``) then replaces pixels in training (``--feature_cache``) and
evaluation (``--feature_cache NAME=DIR``): no JPEG decoding and no image tower during the run. Under
``torchrun`` each process encodes a contiguous shard and writes it as a part; rank 0 then joins the
parts into one cache (the output folder must be on a file system every process sees).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from egg_zoo_discritune.archs.options import ReceiverOptions
from egg_zoo_discritune.captioning import encode_images
from egg_zoo_discritune.cli import run as run_cli, start
from egg_zoo_discritune.config import add_options, options_from
from egg_zoo_discritune.data_loaders import dataset_records
from egg_zoo_discritune.data_loaders.eval_sets import EVAL_SETS, parse_eval_set
from egg_zoo_discritune.data_loaders.features import fingerprint, read_part, write_cache
from egg_zoo_discritune.data_loaders.images import ImageRecord, ImageRecordsDataset
from egg_zoo_discritune.data_loaders.options import DataOptions
from egg_zoo_discritune.engine.distributed import DistributedContext, barrier, local_device, process_group, shard
from egg_zoo_discritune.factory import load_clips
from egg_zoo_discritune.options import opt

log = logging.getLogger("discritune")
PARTS = ".parts"


@dataclass
class ExtractOptions:
    """Which images go into the cache, and where it is written."""

    splits: list[str] = opt(["train", "val"], "splits of the dataset to include (one cache for all of them)")
    test_set: Optional[str] = opt(None, f"instead of --dataset/--splits, a test set of evaluate, NAME or NAME:SPLIT, "
                                        f"read from --data_root ({', '.join(EVAL_SETS)})")
    out: str = opt("features", "cache folder to write")
    batch_size: int = opt(256, "images per batch")
    no_cuda: bool = opt(False, "run on the CPU even when a GPU is available")


def _records(opts: ExtractOptions, data: DataOptions) -> tuple[str, list[ImageRecord]]:
    """The cache's source (the dataset folder evaluation checks it against) and its images, each once."""
    if opts.test_set:
        eval_set, split = parse_eval_set(opts.test_set)
        if not data.data_root:
            raise ValueError(f"--test_set {opts.test_set} needs --data_root (the folder of {eval_set.folder})")
        return eval_set.folder, eval_set.read(Path(data.data_root), split)
    records: dict[str, ImageRecord] = {}
    for split in opts.splits:
        for record in dataset_records(data.dataset, split, data.data_root, data.annotations, data.include_restval):
            records.setdefault(record.image_id, record)
    return data.dataset, list(records.values())


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m egg_zoo_discritune.extract_features",
                                     description=__doc__.split("\n")[0])
    for cls in (ExtractOptions, DataOptions, ReceiverOptions):
        add_options(parser, cls)
    namespace = parser.parse_args(sys.argv[1:] if argv is None else argv)
    opts, data = options_from(namespace, ExtractOptions), options_from(namespace, DataOptions)
    device = start(opts.no_cuda)
    with process_group(device.type == "cuda") as context:
        return _extract(opts, data, options_from(namespace, ReceiverOptions), local_device(device, context), context)


def _extract(opts: ExtractOptions, data: DataOptions, receiver: ReceiverOptions, device: torch.device,
             context: DistributedContext) -> Path:
    """This process's shard of the images to its part of the cache; rank 0 joins the parts."""
    retriever, _, preprocess = load_clips(receiver)
    source, records = _records(opts, data)
    rows = shard(len(records), context)
    dataset = ImageRecordsDataset(records[rows.start:rows.stop], preprocess, source=source, hash_contents=True)
    encoded = encode_images(dataset, retriever.to(device), None, opts.batch_size, device, data.num_workers)
    ids = [dataset.records[i].image_id for i in encoded.indices.tolist()]
    hashes = np.frombuffer(dataset.content_hashes, dtype=np.uint64)[encoded.indices.numpy()]
    manifest = {**fingerprint(retriever), "source": source, "dataset": data.dataset, "splits": opts.splits,
                "test_set": opts.test_set}
    out = Path(opts.out)
    if not context.is_distributed:
        write_cache(out, ids, [encoded.features.numpy()], hashes, {**manifest, "n_skipped": dataset.n_skipped})
    else:
        write_cache(out / PARTS / f"rank-{context.rank:05d}", ids, [encoded.features.numpy()], hashes,
                    {"n_skipped": dataset.n_skipped})
        barrier()
        if context.is_leader:
            parts = [read_part(p) for p in sorted((out / PARTS).iterdir())]
            write_cache(out, [i for p in parts for i in p[0]], [p[1] for p in parts],
                        np.concatenate([p[2] for p in parts]),
                        {**manifest, "n_skipped": sum(p[3]["n_skipped"] for p in parts), "processes": len(parts)})
            shutil.rmtree(out / PARTS)
        barrier()
    if context.is_leader:
        log.info("image features written to %s (%d processes)", out, context.world_size)
    return out


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
