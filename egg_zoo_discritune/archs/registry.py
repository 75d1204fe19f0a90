"""Named senders and receivers, and the one factory for each (``--sender NAME``, ``--receiver NAME``).

A sender entry is a function ``build(options: SenderOptions, feature_dim: int) -> Captioner``
(``feature_dim``: the size of the image features a feature-reading sender gets); a receiver entry is a
function ``build(options: ReceiverOptions) -> (Retriever, image processor)``. Other packages add entries
without touching this one, through Python entry points in the groups ``egg_zoo_discritune.senders`` and
``egg_zoo_discritune.receivers`` (the entry point's name is the ``--sender`` / ``--receiver`` name).
What is built is checked against the contracts in ``archs/contracts.py``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Callable, Optional

from egg_zoo_discritune.archs.blip import build_blip
from egg_zoo_discritune.archs.clip import load_retriever
from egg_zoo_discritune.archs.clipcap import ClipCapSender, build_clipcap
from egg_zoo_discritune.archs.contracts import Captioner, Retriever, check_captioner, check_retriever
from egg_zoo_discritune.archs.egg_rnn import build_egg_rnn
from egg_zoo_discritune.archs.options import ReceiverOptions, SenderOptions

SENDER_GROUP = "egg_zoo_discritune.senders"
RECEIVER_GROUP = "egg_zoo_discritune.receivers"

SenderBuilder = Callable[[SenderOptions, int], Captioner]
ReceiverBuilder = Callable[[ReceiverOptions], tuple[Retriever, Any]]


def build_clipcap_sender(options: SenderOptions, feature_dim: int, weights: Optional[str] = None,
                         mapping: str = "mlp") -> ClipCapSender:
    """A ClipCap reading ``feature_dim``-d image features; ``weights`` overrides ``--clipcap_weights``,
    ``mapping`` is the type of a new mapper (a weights file holds its own)."""
    sender = build_clipcap(
        options.gpt2, weights or options.clipcap_weights, mapping, clip_dim=feature_dim,
        prefix_length=options.prefix_length, clip_length=options.clip_length, num_layers=options.mapper_layers,
        stop_rule=options.stop_rule, trainable=options.trainable, dropout=options.dropout == "on",
    )
    if sender.feature_dim != feature_dim:
        raise ValueError(f"the ClipCap mapper takes {sender.feature_dim}-d image features but the retriever gives "
                         f"{feature_dim}-d ones (the released ClipCap weights need CLIP ViT-B/32)")
    return sender


def _clipcap(mapping: str) -> SenderBuilder:
    def build(options: SenderOptions, feature_dim: int) -> Captioner:
        return build_clipcap_sender(options, feature_dim, mapping=mapping)
    return build


def _blip(hub_id: str) -> SenderBuilder:
    def build(options: SenderOptions, feature_dim: int) -> Captioner:
        return build_blip(options.sender_source or hub_id, options.prompt, dropout=options.dropout == "on")
    return build


def _egg_rnn(options: SenderOptions, feature_dim: int) -> Captioner:
    return build_egg_rnn(feature_dim, options.egg_words, max_len=options.egg_max_len)


def _clip(hub_id: str) -> ReceiverBuilder:
    def build(options: ReceiverOptions) -> tuple[Retriever, Any]:
        return load_retriever(hub_id, options.receiver_tokenizer, options.similarity, options.trust_torchscript)
    return build


SENDERS: dict[str, SenderBuilder] = {
    # ClipCap (the paper's main captioner): GPT-2 from --gpt2, mapper and GPT-2 weights from --clipcap_weights;
    # the mapper type is read off the weights file, the name sets it for a new mapper.
    "clipcap-mlp": _clipcap("mlp"),
    "clipcap-transformer": _clipcap("transformer"),
    # BLIP finetuned on COCO captions (the paper's second captioner); --sender_source for a local copy.
    "blip-base": _blip("Salesforce/blip-image-captioning-base"),
    "blip-large": _blip("Salesforce/blip-image-captioning-large"),
    # An emergent-language agent learning from scratch: EGG's RnnSenderReinforce over --egg_words.
    "egg-rnn": _egg_rnn,
}

RECEIVERS: dict[str, ReceiverBuilder] = {
    "clip-vit-b32": _clip("openai/clip-vit-base-patch32"),  # the paper's retriever
    "clip-vit-b16": _clip("openai/clip-vit-base-patch16"),
    "clip-vit-l14": _clip("openai/clip-vit-large-patch14"),
    "siglip-base": _clip("google/siglip-base-patch16-224"),  # SigLIP: sigmoid-trained, read as scaled cosine too
}


def _plugins(group: str) -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def sender_names() -> list[str]:
    return sorted({*SENDERS, *_plugins(SENDER_GROUP)})


def build_sender(options: SenderOptions, feature_dim: int) -> Captioner:
    """The sender named ``options.sender``: built in, or registered by another package."""
    builder = SENDERS.get(options.sender)
    if builder is None:
        plugin = _plugins(SENDER_GROUP).get(options.sender)
        if plugin is None:
            raise ValueError(f"unknown sender {options.sender!r}; known: {', '.join(sender_names())} (packages "
                             f"add more through the {SENDER_GROUP!r} entry-point group)")
        builder = plugin.load()
    return check_captioner(builder(options, feature_dim), options.sender)


def build_receiver(options: ReceiverOptions, name: str) -> tuple[Retriever, Any]:
    """``(retriever, image processor)`` for ``name``: a registered name, else a hub id, HF directory or OpenAI .pt."""
    builder = RECEIVERS.get(name)
    if builder is None and name in _plugins(RECEIVER_GROUP):
        builder = _plugins(RECEIVER_GROUP)[name].load()
    retriever, processor = (builder(options) if builder is not None else
                            load_retriever(name, options.receiver_tokenizer, options.similarity,
                                           options.trust_torchscript))
    return check_retriever(retriever, name), processor
