"""Builds the models of a run from their options: the frozen CLIP(s) with their preprocessing, and the
captioner from its original weights, a training checkpoint, a run directory or an export."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional

import torch
from PIL import Image

from egg_zoo_discritune.archs.clip import load_retriever
from egg_zoo_discritune.archs.clipcap import EXPORT_FILE
from egg_zoo_discritune.archs.contracts import Captioner, Retriever
from egg_zoo_discritune.archs.options import ReceiverOptions, SenderOptions
from egg_zoo_discritune.archs.registry import build_clipcap_sender, build_receiver, build_sender
from egg_zoo_discritune.engine.checkpoint import load_checkpoint

PRETRAINED = "pretrained"

Preprocess = Callable[[Image.Image], torch.Tensor]


def receiver_names(receiver: ReceiverOptions) -> list[str]:
    names = [n.strip() for n in receiver.receiver.split(",") if n.strip()]
    if not names:
        raise ValueError("--receiver names no retriever")
    return names


def pixels_of(processor) -> Preprocess:
    """A HF image processor as a function of one PIL image."""
    return lambda image: processor(images=image, return_tensors="pt").pixel_values[0]


def load_clips(receiver: ReceiverOptions, sender_clip: Optional[str] = None
               ) -> tuple[Retriever, Optional[Retriever], Preprocess]:
    """The (first) retriever, the sender's own CLIP image encoder (None: it shares the retriever's
    features), and the pixel preprocessing both read."""
    retriever, processor = build_receiver(receiver, receiver_names(receiver)[0])
    sender_encoder = None
    if sender_clip and sender_clip != receiver.receiver:
        sender_encoder, sender_processor = load_retriever(sender_clip, receiver.receiver_tokenizer,
                                                            trust_torchscript=receiver.trust_torchscript)
        _same_pixels(processor, sender_processor, f"--sender_clip {sender_clip}")
    return retriever, sender_encoder, pixels_of(processor)


def load_other_receivers(receiver: ReceiverOptions, first: Retriever) -> list[Retriever]:
    """The retrievers after ``first`` in ``--receiver a,b,c``; they read the first one's pixels."""
    others = []
    for name in receiver_names(receiver)[1:]:
        retriever, processor = build_receiver(receiver, name)
        _same_pixels(first.image_processor, processor, f"retriever {name}")
        others.append(retriever)
    return others


def _same_pixels(processor, other, what: str) -> None:
    def pixels(p) -> dict:  # what the model sees: the crop (CLIP) or the resize (SigLIP), and the normalisation
        return {"size": getattr(p, "crop_size", None) or p.size, "mean": p.image_mean, "std": p.image_std}

    if pixels(other) != pixels(processor):
        raise ValueError(f"{what} takes other pixels ({pixels(other)}) than the retriever ({pixels(processor)}); "
                         "both must read the same pixels")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sender_from(spec: str, options: SenderOptions, feature_dim: int) -> tuple[Captioner, dict]:
    """``spec``: ``pretrained`` (the out-of-the-box ``--sender``: ClipCap's ``--clipcap_weights``, BLIP's hub
    model), a run directory (its ClipCap export, else its ``final.tar``), a training checkpoint ``.tar``
    (its trainable weights over the pretrained ones), or a ClipCap ``.pt`` file. Also returns where the
    weights came from and the file's SHA-256."""
    is_clipcap = options.sender.startswith("clipcap")
    if spec == PRETRAINED:
        if not is_clipcap:
            return build_sender(options, feature_dim), {"checkpoint": options.sender_source or options.sender}
        if not options.clipcap_weights:
            raise ValueError("'pretrained' needs --clipcap_weights (e.g. coco_weights.pt)")
        path = Path(options.clipcap_weights)
        return build_sender(options, feature_dim), {"checkpoint": str(path), "sha256": file_sha256(path)}
    path = Path(spec)
    if path.is_dir():
        found = [p for p in (path / EXPORT_FILE, path / "final.tar") if p.is_file() and (is_clipcap or p.suffix == ".tar")]
        if not found:
            raise FileNotFoundError(f"{path}: no {EXPORT_FILE} or final.tar; did that training run finish? "
                                    "Pass one of its .tar checkpoints instead")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    info = {"checkpoint": str(path), "sha256": file_sha256(path)}
    if path.suffix != ".tar":
        if not is_clipcap:
            raise ValueError(f"{path}: a ClipCap weights file, but --sender is {options.sender}")
        return build_clipcap_sender(options, feature_dim, weights=str(path)), info
    checkpoint = load_checkpoint(path)
    sender = build_sender(options, feature_dim)
    trained = {k[len("sender."):]: v for k, v in checkpoint["model_state_dict"].items() if k.startswith("sender.")}
    unexpected = sender.load_state_dict(trained, strict=False).unexpected_keys
    if unexpected or not trained:
        raise ValueError(f"{path}: its weights do not fit this {options.sender} (unexpected {sorted(unexpected)[:5]})")
    return sender, {**info, "epoch": checkpoint["epoch"]}
