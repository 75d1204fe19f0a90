"""Batched captioning for evaluation and for captioning one's own images: the image tower runs once
per image, then any number of captioners write from the stored features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from tqdm.auto import tqdm

from egg_zoo_discritune.archs.clip import ClipRetriever
from egg_zoo_discritune.archs.clipcap import ClipCapSender
from egg_zoo_discritune.data_loaders.images import ImageRecordsDataset, image_loader


@dataclass
class EncodedImages:
    indices: torch.Tensor  # dataset positions of the images that decoded, in file order
    features: torch.Tensor  # retriever image embeddings
    prefix_features: torch.Tensor  # what the captioner reads (the same tensor when it shares the retriever's CLIP)


@torch.no_grad()
def encode_images(dataset: ImageRecordsDataset, retriever: ClipRetriever, sender_encoder: Optional[ClipRetriever],
                  batch_size: int, device: torch.device, num_workers: int = 0, desc: str = "images") -> EncodedImages:
    indices, features, prefix = [], [], []
    batches = image_loader(dataset, batch_size, drop_last=False, num_workers=num_workers)
    for pixels, idx in tqdm(batches, desc=desc, leave=False, disable=None):  # no bar when not on a terminal
        pixels = pixels.to(device)
        feats = retriever.encode_images(pixels)
        indices.append(idx)
        features.append(feats.cpu())
        prefix.append(sender_encoder.encode_images(pixels).cpu() if sender_encoder is not None else None)
    if not indices:
        raise ValueError(f"{dataset.source or 'dataset'}: no image could be read ({dataset.n_skipped} skipped)")
    image_features = torch.cat(features)
    prefix_features = image_features if sender_encoder is None else torch.cat(prefix)
    return EncodedImages(torch.cat(indices), image_features, prefix_features)


@torch.no_grad()
def write_captions(sender: ClipCapSender, prefix_features: torch.Tensor, mode: str = "beam", beam_size: int = 5,
                   max_len: int = 40, batch_size: int = 100, desc: str = "captions") -> list[str]:
    device = next(sender.parameters()).device
    captions = []
    for start in tqdm(range(0, prefix_features.size(0), batch_size), desc=desc, leave=False, disable=None):
        tokens, lengths = sender.generate(prefix_features[start:start + batch_size].to(device), mode=mode,
                                          max_new_tokens=max_len, num_beams=beam_size)
        captions += sender.decode(tokens, lengths)
    return captions


@torch.no_grad()
def encode_texts(retriever: ClipRetriever, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    return torch.cat([retriever.encode_texts(texts[i:i + batch_size]).cpu() for i in range(0, len(texts), batch_size)])
