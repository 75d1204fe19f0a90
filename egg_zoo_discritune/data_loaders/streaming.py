"""Training on millions of images (Conceptual Captions): img2dataset shards read sequentially.

Each epoch the shards are shuffled by ``(seed, epoch)`` and dealt round-robin to every DataLoader worker
of every process; a worker reads its shards front to back (a tar in stream mode, a ``files`` folder in
name order) through a shuffle buffer, so nothing but the buffer is in memory and no index of the images
is built. Every process yields the same number of batches (what DDP needs): the epoch is
``images // batch_size`` global batches, counted from img2dataset's ``NNNNN_stats.json`` files (or the
shards themselves), and a worker whose shards run out starts over on them. Images that do not decode
are skipped and counted.
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
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from egg_zoo_discritune.data_loaders.image_modes import UnsupportedImageMode, to_rgb
from egg_zoo_discritune.data_loaders.images import IMAGE_EXTENSIONS, SkipEmpty, collate_images, own_generator
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


def read_shard(shard: Path) -> Iterator[tuple[str, bytes]]:
    """``(key, encoded image)`` in shard order, reading a tar sequentially (no index)."""
    if shard.is_dir():
        for path in sorted(p for p in shard.iterdir() if _is_image(p.name)):
            yield path.stem, path.read_bytes()
        return
    with tarfile.open(shard, "r|") as archive:
        for member in archive:
            if member.isfile() and _is_image(member.name):
                yield member.name.rsplit(".", 1)[0], archive.extractfile(member).read()


def key_label(key: str) -> int:
    """An integer label for logs: img2dataset's numeric key, or a CRC of another key."""
    return int(key) if key.isdigit() else zlib.crc32(key.encode())


class ShardStream(IterableDataset):
    """Items ``(pixels, label)``; one epoch is ``len(self)`` items on this process (``batches`` of ``share``)."""

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

    def _decode(self, data: bytes):
        try:
            with Image.open(io.BytesIO(data)) as image:
                return self.preprocess(to_rgb(image))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            with self._undecodable.get_lock():
                self._undecodable.value += 1
            if isinstance(err, UnsupportedImageMode):
                with self._unsupported.get_lock():
                    self._unsupported.value += 1
            log.debug("skipping undecodable image: %s", err)
            return None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader = self.context.rank * workers + worker
        readers = self.context.world_size * workers
        order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(self.seed * 100_003 +
                                                                                          self.epoch)).tolist()
        mine = [self.shards[i] for i in order[reader % len(order)::readers]] or [self.shards[order[0]]]
        batches = self.batches // workers + (worker < self.batches % workers)
        rng = random.Random(f"{self.seed}-{self.epoch}-{reader}")
        self.epoch += 1
        return self._stream(mine, batches * self.share, rng)

    def _samples(self, shards: list[Path]) -> Iterator[tuple[torch.Tensor, int]]:
        """Decoded ``(pixels, label)`` of ``shards`` in order, starting over at the end."""
        while True:
            decoded = 0
            for shard in shards:
                for key, data in read_shard(shard):
                    pixels = self._decode(data)
                    if pixels is not None:
                        decoded += 1
                        yield pixels, key_label(key)
            if not decoded:
                raise ValueError(f"{self.source or 'stream'}: no image of {[str(s) for s in shards]} decodes")

    def _stream(self, shards: list[Path], quota: int, rng: random.Random) -> Iterator[tuple[torch.Tensor, int]]:
        samples, buffer = self._samples(shards), []
        for produced in range(quota):
            # Never read past what the quota needs, so a worker with exactly its quota reads each image once.
            while len(buffer) < min(self.shuffle_buffer, quota - produced):
                buffer.append(next(samples))
            pick = rng.randrange(len(buffer))
            buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
            yield buffer.pop()


def stream_loader(stream: ShardStream, num_workers: int = 0) -> SkipEmpty:
    """Batches of this process's ``share`` of each global batch; ``len`` is the batches per epoch."""
    return SkipEmpty(DataLoader(stream, batch_size=stream.share, drop_last=True, num_workers=num_workers,
                                collate_fn=partial(collate_images, min_images=min(2, stream.share)),
                                persistent_workers=num_workers > 0, generator=own_generator()))
