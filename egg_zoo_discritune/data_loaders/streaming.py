"""Training on millions of images (Conceptual Captions): img2dataset shards streamed with ``webdataset``.

Each epoch the shards are shuffled by ``(seed, epoch)`` and split by webdataset over the processes and
their DataLoader workers; a reader streams its shards front to back (a tar through webdataset, a ``files``
folder in name order through ``folder_samples``) through a shuffle buffer, so nothing but the buffer is in
memory and no index of the images is built. Every process yields the same number of batches (what DDP
needs): the epoch is ``images // batch_size`` global batches, counted from img2dataset's
``NNNNN_stats.json`` files (or the shards themselves), and a reader whose shards run out starts over on
them. Images that do not decode are skipped and counted. The buffer holds decoded images, so every image
an epoch reads is decoded (and counted if it fails) within that epoch.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import random
import tarfile
import zlib
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset

from egg_zoo_discritune.data_loaders.image_modes import UnsupportedImageMode, to_rgb
from egg_zoo_discritune.data_loaders.images import IMAGE_EXTENSIONS, SkipEmpty, game_collate, own_generator
from egg_zoo_discritune.engine.distributed import DistributedContext

log = logging.getLogger(__name__)


def find_shards(root: Path) -> list[Path]:
    """img2dataset's output folder: ``NNNNN.tar`` (webdataset) or ``NNNNN/`` (files), in name order."""
    shards = sorted(root.glob("*.tar")) or sorted(d for d in root.iterdir() if d.is_dir() and d.name.isdigit())
    if not shards:
        raise FileNotFoundError(f"{root}: no img2dataset shards (NNNNN.tar or NNNNN/ folders) to stream")
    return shards


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def count_images(shard: Path) -> int:
    """Images in a shard: ``successes`` of img2dataset's ``<shard>_stats.json`` when written, else counted."""
    stats = shard.parent / f"{shard.name.split('.')[0]}_stats.json"
    if stats.is_file():
        successes = json.loads(stats.read_text()).get("successes")
        if successes is not None:
            return int(successes)
    if shard.is_dir():
        return sum(1 for p in shard.iterdir() if _is_image(p.name))
    with tarfile.open(shard) as archive:
        return sum(1 for m in archive.getmembers() if m.isfile() and _is_image(m.name))


def folder_samples(shard: Path) -> Iterator[dict]:
    """img2dataset's ``files`` layout, which webdataset does not read: a shard folder's images in name order,
    as webdataset samples (``__key__``, and the encoded image under its extension)."""
    for path in sorted(p for p in shard.iterdir() if _is_image(p.name)):
        yield {"__key__": path.stem, "__url__": str(shard), path.suffix[1:].lower(): path.read_bytes()}


def shard_samples(shards: Iterator[dict], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """A pipeline stage: the samples of each shard, a tar read sequentially by webdataset or a folder."""
    for shard in shards:
        path = Path(shard["url"])
        if path.is_dir():
            yield from folder_samples(path)
        else:
            yield from wds.tariterators.tarfile_samples([shard], handler=handler)


def key_label(key: str) -> int:
    """An integer label for logs: img2dataset's numeric key, or a CRC of another key."""
    return int(key) if key.isdigit() else zlib.crc32(key.encode())


class ShardStream(IterableDataset):
    """Items ``(pixels, label)``; one epoch is ``len(self)`` items on this process (``batches`` of ``share``).

    A webdataset pipeline per epoch: the shard list in the epoch's order, split by node (torchrun's
    ``RANK``/``WORLD_SIZE``) and by DataLoader worker, samples read and decoded (errors skipped and counted
    by a webdataset handler), a shuffle buffer, and the reader's quota of the epoch, passes over its shards
    repeated until it is met."""

    def __init__(self, shards: list[Path], preprocess: Callable[[Image.Image], torch.Tensor], batch_size: int,
                 seed: int, context: DistributedContext = DistributedContext(), shuffle_buffer: int = 1000,
                 num_workers: int = 0, source: str = ""):
        if batch_size % context.world_size:
            raise ValueError(f"a batch of {batch_size} images cannot be split evenly over {context.world_size} "
                             "processes")
        self.shards, self.preprocess, self.seed, self.context = shards, preprocess, seed, context
        self.share = batch_size // context.world_size
        self.n_images = sum(count_images(s) for s in shards)
        self.batches = self.n_images // batch_size
        self.shuffle_buffer, self.num_workers, self.source = shuffle_buffer, max(num_workers, 1), source
        readers = context.world_size * self.num_workers
        if readers > len(shards):
            log.warning("%s: %d shards for %d readers (processes x workers): some shards are read by several",
                        source or "stream", len(shards), readers)
        self.epoch = 0
        self.n_missing = 0
        # Shared with the DataLoader workers: images that did not load, and of those, in an unsupported mode.
        self._undecodable, self._unsupported = multiprocessing.Value("l", 0), multiprocessing.Value("l", 0)

    @property
    def n_undecodable(self) -> int:
        return self._undecodable.value

    @property
    def n_unsupported_mode(self) -> int:
        return self._unsupported.value

    @property
    def n_skipped(self) -> int:
        return self.n_undecodable

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches * self.share

    def _decode(self, sample: dict) -> tuple[torch.Tensor, int]:
        data = next((sample[ext] for ext in sample if f".{ext.lower()}" in IMAGE_EXTENSIONS), None)
        if data is None:
            raise ValueError(f"sample {sample['__key__']} holds no image ({sorted(sample)})")
        with Image.open(io.BytesIO(data)) as image:
            return self.preprocess(to_rgb(image)), key_label(sample["__key__"])

    def _skip(self, err: Exception) -> bool:
        """webdataset's error handler: count the sample, say why at debug level, and go on."""
        with self._undecodable.get_lock():
            self._undecodable.value += 1
        if isinstance(err, UnsupportedImageMode):
            with self._unsupported.get_lock():
                self._unsupported.value += 1
        log.debug("skipping an undecodable image: %s", err)
        return True

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        rank, world_size, worker, workers = wds.utils.pytorch_worker_info()
        if (rank, world_size) != (self.context.rank, self.context.world_size):
            raise ValueError(f"webdataset sees process {rank} of {world_size} (RANK, WORLD_SIZE), the run "
                             f"{self.context.rank} of {self.context.world_size}")
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = [str(self.shards[i]) for i in torch.randperm(len(self.shards), generator=generator).tolist()]
        # Every reader must get a shard, or its process would run out of batches before the others (DDP waits).
        readers = world_size * workers
        order *= -(-readers // len(order))
        quota = (self.batches // workers + (worker < self.batches % workers)) * self.share
        rng = random.Random(f"{self.seed}-{self.epoch}-{rank}-{worker}")
        self.epoch += 1
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(order), wds.split_by_node, wds.split_by_worker,
            partial(shard_samples, handler=self._skip),
            wds.map(self._decode, handler=self._skip),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng),
        ).repeat(nbatches=quota)  # whole passes, so a pass's images all come out before the next one's
        return self._checked(iter(pipeline), quota)

    def _checked(self, samples: Iterator, quota: int) -> Iterator[tuple[torch.Tensor, int]]:
        produced = 0
        for produced, sample in enumerate(samples, 1):
            yield sample
        if produced < quota:
            raise ValueError(f"{self.source or 'stream'}: no image of this reader's shards decodes "
                             f"({produced} of {quota} images)")


def stream_loader(stream: ShardStream, num_workers: int = 0) -> SkipEmpty:
    """Batches of this process's ``share`` of each global batch; ``len`` is the batches per epoch."""
    return SkipEmpty(DataLoader(stream, batch_size=stream.share, drop_last=True, num_workers=num_workers,
                                collate_fn=game_collate(stream.share),
                                persistent_workers=num_workers > 0, generator=own_generator()))
