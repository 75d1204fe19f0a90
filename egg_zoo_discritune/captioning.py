"""Batched captioning for evaluation and for captioning one's own images: the image tower runs once
per image, then any number of captioners write from the stored features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from egg_zoo_discritune.archs.contracts import Captioner, Retriever
from egg_zoo_discritune.data_loaders.images import ImageRecordsDataset, image_loader
from egg_zoo_discritune.engine.distributed import DistributedContext, all_gather_lists, all_gather_rows, shard


@dataclass
class EncodedImages:
    indices: torch.Tensor  # dataset positions of the images that decoded, in file order
    features: torch.Tensor  # retriever image embeddings
    prefix_features: torch.Tensor  # what the captioner reads (the same tensor when it shares the retriever's CLIP)

    def gather(self) -> "EncodedImages":
        """The images of every process (each encoded a contiguous shard), in file order."""
        features = all_gather_rows(self.features)[0]
        prefix = features if self.prefix_features is self.features else all_gather_rows(self.prefix_features)[0]
        return EncodedImages(all_gather_rows(self.indices)[0], features, prefix)


@torch.no_grad()
def encode_images(dataset: ImageRecordsDataset, retriever: Retriever, sender_encoder: Optional[Retriever],
                  batch_size: int, device: torch.device, num_workers: int = 0, desc: str = "images",
                  context: DistributedContext = DistributedContext()) -> EncodedImages:
    """The features of this process's contiguous shard of ``dataset`` (all of it in a single process)."""
    indices, features, prefix = [], [], []
    part = Subset(dataset, shard(len(dataset), context))
    batches = image_loader(part, batch_size, drop_last=False, num_workers=num_workers)
    for pixels, idx in tqdm(batches, desc=desc, leave=False, disable=None):  # no bar when not on a terminal
        pixels = pixels.to(device)
        feats = retriever.encode_images(pixels)
        indices.append(idx)
        features.append(feats.cpu())
        prefix.append(sender_encoder.encode_images(pixels).cpu() if sender_encoder is not None else None)
    if not indices and not context.is_distributed:
        raise ValueError(f"{dataset.source or 'dataset'}: no image could be read ({dataset.n_skipped} skipped)")
    dim = retriever.feature_dim
    image_features = torch.cat(features) if features else torch.empty(0, dim)
    prefix_features = image_features if sender_encoder is None else (torch.cat(prefix) if prefix else
                                                                     torch.empty(0, dim))
    return EncodedImages(torch.cat(indices) if indices else torch.empty(0, dtype=torch.long), image_features,
                         prefix_features)


@torch.no_grad()
def write_captions(sender: Captioner, prefix_features: torch.Tensor, mode: str = "beam", beam_size: int = 5,
                   max_len: int = 40, batch_size: int = 100, desc: str = "captions",
                   context: DistributedContext = DistributedContext()) -> list[str]:
    """One caption per row of ``prefix_features``; under torchrun each process writes a contiguous share
    and every process gets all captions back, in order."""
    device = next(sender.parameters()).device
    rows = shard(prefix_features.size(0), context)
    captions = []
    for start in tqdm(range(rows.start, rows.stop, batch_size), desc=desc, leave=False, disable=None):
        tokens, lengths = sender.generate(prefix_features[start:min(start + batch_size, rows.stop)].to(device),
                                          mode=mode, max_new_tokens=max_len, num_beams=beam_size)
        captions += sender.decode(tokens, lengths)
    return all_gather_lists(captions)


@torch.no_grad()
def caption_images(sender: Captioner, dataset: ImageRecordsDataset, mode: str = "beam", beam_size: int = 5,
                   max_len: int = 40, batch_size: int = 100, desc: str = "captions",
                   context: DistributedContext = DistributedContext()) -> list[str]:
    """One caption per image of ``dataset`` (in the sender's own preprocessing), for senders that read
    pixels; sharded and gathered like ``write_captions``."""
    device = next(sender.parameters()).device
    captions = []
    part = Subset(dataset, shard(len(dataset), context))
    for pixels, idx in tqdm(image_loader(part, batch_size, drop_last=False), desc=desc, leave=False, disable=None):
        tokens, lengths = sender.generate(pixels.to(device), mode=mode, max_new_tokens=max_len, num_beams=beam_size)
        captions += sender.decode(tokens, lengths)
    if len(captions) != len(part):
        raise ValueError(f"{dataset.source}: {len(part) - len(captions)} images the retriever read do not decode now")
    return all_gather_lists(captions)


@torch.no_grad()
def encode_texts(retriever: Retriever, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    return torch.cat([retriever.encode_texts(texts[i:i + batch_size]).cpu() for i in range(0, len(texts), batch_size)])
