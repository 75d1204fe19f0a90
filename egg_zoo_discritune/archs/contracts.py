"""The two roles of the game as Protocols: what any captioner (sender) and any retriever (receiver)
must offer. Built-in models and plugins alike are checked against them when they are built."""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Captioner(Protocol):
    """Writes captions for images, and scores given captions by teacher forcing.

    ``inputs`` are the first retriever's image features ``[B, D]``, or, when ``reads_pixels``, the
    sender's own preprocessing of the images (``image_processor``, a Hugging Face image processor).
    Captions travel as token ids ``[B, T]`` padded with ``pad_id`` plus their lengths (end token included).
    """

    reads_pixels: bool
    image_processor: Optional[Any]
    pad_id: int
    export_file: str  # the file name of the finetuned captioner in a run directory

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def generate(self, inputs: torch.Tensor, mode: str = "greedy", max_new_tokens: int = 30, num_beams: int = 5,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """No grad: token ids ``[B, T]`` and lengths ``[B]``."""

    def log_probs(self, inputs: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, temperature: float = 1.0,
                  entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One teacher-forced pass with grad: per-token log-probs and entropies ``[B, T]``, zero past each
        length; the entropies carry a gradient only when ``entropy_grad``."""

    def authors_log_prob(self, token_logp: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                         max_new_tokens: int) -> torch.Tensor:
        """``[B]``: the caption log-prob as the authors' code normalised it for this kind of captioner."""

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[str]: ...

    def export(self) -> dict[str, torch.Tensor]:
        """The finetuned weights in the captioner's own file format (ClipCap: the original checkpoint layout)."""


@runtime_checkable
class Retriever(Protocol):
    """Frozen: embeds images and captions and scores every caption against every image."""

    name: str
    feature_dim: int
    image_processor: Any  # the pixels ``encode_images`` reads

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...

    def score(self, text_features: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """``[n_texts, n_images]``; a higher score is a better match."""


def check_captioner(sender: Any, name: str) -> Captioner:
    """``sender`` itself, or a clear error naming what the ``Captioner`` contract misses."""
    return _check(sender, Captioner, f"sender {name!r}")


def check_retriever(receiver: Any, name: str) -> Retriever:
    return _check(receiver, Retriever, f"retriever {name!r}")


def _check(obj: Any, protocol: type, what: str) -> Any:
    if not isinstance(obj, protocol):
        members = [m for m in (*protocol.__annotations__, *(k for k, v in vars(protocol).items() if callable(v)))
                   if not m.startswith("_") and not hasattr(obj, m)]
        raise ValueError(f"{what} ({type(obj).__name__}) is not a {protocol.__name__}: it lacks "
                        f"{', '.join(sorted(members))} (see egg_zoo_discritune/archs/contracts.py)")
    return obj
