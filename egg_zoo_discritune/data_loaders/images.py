"""Image datasets for the game: records (path, id, captions) -> preprocessed pixels.

Images that are missing are dropped when the dataset is built; images that fail to decode are
skipped when loaded. Both are counted, never replaced by another image or by zeros.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import tarfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from egg_zoo_discritune.data_loaders.image_modes import UnsupportedImageMode, to_rgb
from egg_zoo_discritune.engine.distributed import DistributedContext

log = logging.getLogger(__name__)

UNDECODABLE, UNSUPPORTED_MODE = 1, 2  # why an image was skipped
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class ImageRecord:
    """An image file, or the member ``member`` of the tar archive ``path`` (webdataset shards)."""

    path: Path
    image_id: str
    captions: list[str] = field(default_factory=list)
    member: Optional[str] = None


def content_hash(data: bytes) -> int:
    """A 64-bit BLAKE2b of an image file's bytes: what a feature cache records per image (~1 GB/s)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def read_image_bytes(record: ImageRecord, archives: dict[Path, tarfile.TarFile]) -> bytes:
    """The encoded image of ``record``; tar archives are opened once into ``archives`` and kept open."""
    if record.member is None:
        return record.path.read_bytes()
    if record.path not in archives:
        archives[record.path] = tarfile.open(record.path)
    archive = archives[record.path]
    return archive.extractfile(archive.getmember(record.member)).read()


class ImageRecordsDataset(Dataset):
    """Item ``i``: ``(pixels [3, H, W], i)``, or ``None`` when the image does not decode. With
    ``hash_contents``, ``content_hashes[i]`` is set to the ``content_hash`` of image ``i``'s bytes when it is
    loaded (in any DataLoader worker)."""

    def __init__(self, records: Sequence[ImageRecord], preprocess: Callable[[Image.Image], torch.Tensor],
                 source: str = "", hash_contents: bool = False):
        present = [r for r in records if r.path.is_file()]
        self.n_missing = len(records) - len(present)
        if self.n_missing:
            log.warning("%s: %d of %d images are missing and skipped (first: %s)", source or "dataset",
                        self.n_missing, len(records), next(r.path for r in records if not r.path.is_file()))
        self.records = present
        self.preprocess = preprocess
        self.source = source
        # One flag per record, shared with DataLoader workers, so undecodable images are counted once.
        self._failed = multiprocessing.Array("b", max(len(present), 1), lock=False)
        self.content_hashes = multiprocessing.Array("Q", max(len(present), 1), lock=False) if hash_contents else None
        self._archives: dict[Path, tarfile.TarFile] = {}  # opened lazily, in each worker

    def _open(self, index: int) -> Image.Image:
        data = read_image_bytes(self.records[index], self._archives)
        if self.content_hashes is not None:
            self.content_hashes[index] = content_hash(data)
        return Image.open(io.BytesIO(data))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Optional[tuple[torch.Tensor, int]]:
        record = self.records[index]
        try:
            with self._open(index) as image:
                pixels = self.preprocess(to_rgb(image))
        except (OSError, UnidentifiedImageError, ValueError, KeyError, tarfile.TarError) as err:
            if not self._failed[index]:
                log.warning("skipping undecodable image %s%s: %s", record.path,
                            f"[{record.member}]" if record.member else "", err)
            self._failed[index] = UNSUPPORTED_MODE if isinstance(err, UnsupportedImageMode) else UNDECODABLE
            return None
        return pixels, index

    @property
    def n_undecodable(self) -> int:
        """Images that did not load, for either reason (counted once each)."""
        return sum(1 for flag in self._failed[: len(self.records)] if flag)

    @property
    def n_unsupported_mode(self) -> int:
        """Of those, images that decoded into a pixel mode with no conversion to RGB."""
        return sum(1 for flag in self._failed[: len(self.records)] if flag == UNSUPPORTED_MODE)

    @property
    def n_skipped(self) -> int:
        return self.n_missing + self.n_undecodable


def collate_images(items: list, min_images: int = 1) -> Optional[tuple[torch.Tensor, ...]]:
    """Stacks the images that decoded, or None when fewer than ``min_images`` did (the game's batches need
    2: an image alone has no distractor and would score P@1 100 %); ``labels`` are their dataset indices.
    Items holding a pair (the sender's pixels, the retrievers' input) give EGG's ``(sender_input, labels,
    receiver_input)``."""
    items = [x for x in items if x is not None]
    if len(items) < min_images:
        return None
    labels = torch.tensor([x[1] for x in items])
    if isinstance(items[0][0], tuple):
        return torch.stack([x[0][0] for x in items]), labels, torch.stack([x[0][1] for x in items])
    return torch.stack([x[0] for x in items]), labels


class BlockSampler(Sampler[int]):
    """This process's share of each block of ``block_size`` consecutive images of an epoch's order.

    The order is a new permutation every epoch, a function of ``(seed, epoch)`` only (so a resumed run
    sees the same order as an uninterrupted one), or file order without a seed (fixed evaluation
    blocks, as in the paper). Under torchrun each block is one global batch and rank ``r`` takes its
    ``r``-th slice, so the global batches are the same for any number of processes. The tail that does
    not fill a block is dropped. The epoch advances by itself at each pass (EGG's Trainer never calls
    ``set_epoch``); ``set_epoch`` positions it on resume."""

    def __init__(self, n: int, block_size: int, seed: Optional[int] = None, rank: int = 0, world_size: int = 1):
        if block_size % world_size:
            raise ValueError(f"a batch of {block_size} images cannot be split evenly over {world_size} processes")
        self.n, self.block_size, self.seed = n, block_size, seed
        self.share = block_size // world_size
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.block_size * self.share

    def __iter__(self) -> Iterator[int]:
        if self.seed is None:
            order = torch.arange(self.n)
        else:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        self.epoch += 1
        blocks = order[: self.n // self.block_size * self.block_size].view(-1, self.block_size)
        return iter(blocks[:, self.rank * self.share:(self.rank + 1) * self.share].reshape(-1).tolist())


class SkipEmpty:
    """Iterates a DataLoader, dropping batches in which no image decoded."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return (batch for batch in self.loader if batch is not None)

    def set_epoch(self, epoch: int) -> None:
        """Positions the epoch-dependent order (of the sampler, or of a streamed dataset) on resume."""
        (getattr(self.loader.sampler, "set_epoch", None) or self.dataset.set_epoch)(epoch)


def game_collate(share: int) -> Callable[[list], Optional[tuple[torch.Tensor, ...]]]:
    """The collate function of the game's loaders: a batch needs 2 decoded images, or under torchrun, where
    the game gathers the whole batch as candidates, this process's share when that is 1."""
    return partial(collate_images, min_images=min(2, share))


def own_generator() -> torch.Generator:
    """For a DataLoader, which draws its workers' base seed at every pass: from this, not from torch's
    global generator, so a validation pass after a checkpoint leaves the training's random numbers (and so
    a resumed run) unchanged."""
    return torch.Generator().manual_seed(0)


def image_loader(dataset: Dataset, batch_size: int, *, shuffle_seed: Optional[int] = None, drop_last: bool = True,
                 num_workers: int = 0, context: DistributedContext = DistributedContext()) -> SkipEmpty:
    """Batches of ``(pixels or features, indices)``. With ``drop_last`` (the game's loaders): ``batch_size``
    is the global batch, shuffled per epoch when ``shuffle_seed`` is given, else consecutive blocks in file
    order, and each process of ``context`` loads its slice. Without it: every item once, in file order."""
    if not drop_last:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_images,
                            generator=own_generator())
        return SkipEmpty(loader)
    sampler = BlockSampler(len(dataset), batch_size, shuffle_seed, context.rank, context.world_size)
    return SkipEmpty(DataLoader(dataset, batch_size=sampler.share, sampler=sampler, drop_last=True,
                                num_workers=num_workers, collate_fn=game_collate(sampler.share),
                                generator=own_generator(),
                                persistent_workers=num_workers > 0))
