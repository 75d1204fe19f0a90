"""Builds the models of a run from their options: the frozen CLIP(s) with their preprocessing, and the
ClipCap captioner from its original weights, a training checkpoint, a run directory or an export."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image

from egg_zoo_discritune.archs.clip import ClipRetriever, load_retriever
from egg_zoo_discritune.archs.clipcap import ClipCapSender, build_clipcap
from egg_zoo_discritune.config import ReceiverOptions, SenderOptions
from egg_zoo_discritune.engine.checkpoint import load_checkpoint

EXPORT_FILE = "clipcap_finetuned.pt"
PRETRAINED = "pretrained"

Preprocess = Callable[[Image.Image], torch.Tensor]


def load_clips(receiver: ReceiverOptions, sender_clip: Optional[str] = None
               ) -> tuple[ClipRetriever, Optional[ClipRetriever], Preprocess]:
    """The retriever, the sender's own image encoder (None: it shares the retriever's features), and the
    pixel preprocessing both read."""
    retriever, processor = load_retriever(receiver.receiver, receiver.receiver_tokenizer, receiver.similarity)
    sender_encoder = None
    if sender_clip and sender_clip != receiver.receiver:
        sender_encoder, sender_processor = load_retriever(sender_clip, receiver.receiver_tokenizer)
        if sender_processor.crop_size != processor.crop_size:
            raise ValueError(f"--sender_clip {sender_clip} takes {sender_processor.crop_size} images but the "
                             f"retriever {processor.crop_size}; both must read the same pixels")
    return retriever, sender_encoder, lambda image: processor(images=image, return_tensors="pt").pixel_values[0]


def load_sender(options: SenderOptions, encoder: ClipRetriever, weights: Optional[str] = None) -> ClipCapSender:
    """A ClipCap sender reading ``encoder``'s image features; ``weights`` overrides ``--clipcap_weights``."""
    dim = encoder.model.config.projection_dim
    sender = build_clipcap(
        options.gpt2, weights or options.clipcap_weights, options.mapping, clip_dim=dim,
        prefix_length=options.prefix_length, clip_length=options.clip_length, num_layers=options.mapper_layers,
        stop_rule=options.stop_rule, trainable=options.trainable, feature_name=encoder.name,
    )
    mapper_in = next(m for m in sender.clip_project.modules() if isinstance(m, torch.nn.Linear)).in_features
    if mapper_in != dim:
        raise ValueError(f"the ClipCap mapper takes {mapper_in}-d image features but {encoder.name} gives {dim}-d "
                         "ones (the released ClipCap weights need CLIP ViT-B/32)")
    return sender


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sender_from(spec: str, options: SenderOptions, encoder: ClipRetriever) -> tuple[ClipCapSender, dict]:
    """``spec``: ``pretrained`` (the out-of-the-box ``--clipcap_weights``), a run directory (its export),
    a training checkpoint ``.tar`` (its trainable weights over the base weights), or a ClipCap ``.pt`` file.
    Also returns where the weights came from and the file's SHA-256."""
    if spec == PRETRAINED:
        if not options.clipcap_weights:
            raise ValueError("'pretrained' needs --clipcap_weights (e.g. coco_weights.pt)")
        path = Path(options.clipcap_weights)
        return load_sender(options, encoder), {"checkpoint": str(path), "sha256": file_sha256(path)}
    path = Path(spec)
    if path.is_dir():
        if not (path / EXPORT_FILE).is_file():
            raise FileNotFoundError(f"{path}: no {EXPORT_FILE}; did that training run finish? "
                                    "Pass one of its .tar checkpoints instead")
        path = path / EXPORT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    info = {"checkpoint": str(path), "sha256": file_sha256(path)}
    if path.suffix != ".tar":
        return load_sender(options, encoder, weights=str(path)), info
    checkpoint = load_checkpoint(path)
    sender = load_sender(options, encoder)
    trained = {k[len("sender."):]: v for k, v in checkpoint["model_state_dict"].items() if k.startswith("sender.")}
    unexpected = sender.load_state_dict(trained, strict=False).unexpected_keys
    if unexpected or not trained:
        raise ValueError(f"{path}: its weights do not fit this ClipCap (unexpected {sorted(unexpected)[:5]})")
    return sender, {**info, "epoch": checkpoint["epoch"]}
