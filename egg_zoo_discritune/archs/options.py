"""What a run's models are: the captioner (sender) and the frozen retriever(s) (receivers).

One typed dataclass per model side; the registry's builders read them, and the commands turn each
field into a flag of the same name. Defaults follow the authors' code (what produced the paper's numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from egg_zoo_discritune.options import opt


@dataclass
class SenderOptions:
    """The captioner."""

    sender: str = opt("clipcap-mlp", "captioner: clipcap-mlp, clipcap-transformer (the mapper of a new ClipCap; "
                                     "a weights file sets its own), blip-base, blip-large, egg-rnn (EGG's "
                                     "RnnSenderReinforce learning from scratch), or a name another package "
                                     "registers (entry-point group egg_zoo_discritune.senders)")
    sender_source: Optional[str] = opt(None, "BLIP: hub id or save_pretrained directory (default: the named "
                                             "Salesforce/blip-image-captioning-* model)")
    egg_words: list[str] = opt(["red", "green", "blue", "yellow", "white", "black", "circle", "square", "triangle",
                                "star", "small", "big", "left", "right", "top", "bottom"],
                               "--sender egg-rnn: the words its symbols 1..N stand for (symbol 0 is EOS)")
    egg_max_len: int = opt(10, "--sender egg-rnn: symbols EGG samples before its forced EOS (--max_len must be larger)")
    prompt: str = opt("a picture of ", "BLIP: the text the captions continue (BLIP's captioning prompt; '' for none)")
    clipcap_weights: Optional[str] = opt(None, "ClipCap state dict (coco_weights.pt, conceptual_weights.pt, or an "
                                               "export of this package); without it GPT-2 is pretrained and the "
                                               "mapper random")
    gpt2: str = opt("gpt2", "hub id or directory of GPT-2 (config and tokenizer; the weights too without --clipcap_weights)")
    prefix_length: int = opt(10, "prefix tokens made by a new mapper")
    clip_length: int = opt(10, "CLIP tokens of a new transformer mapper")
    mapper_layers: int = opt(8, "layers of a new transformer mapper")
    trainable: str = opt("all", "what the RL update trains: mapper and GPT-2 (the paper), or one of them",
                         ("all", "mapper", "gpt2"))
    stop_rule: str = opt("any_period", "where ClipCap captions end: after any token containing '.' (the authors' "
                                       "code, which forces EOS after it), at a full stop only, or only at EOS",
                         ("any_period", "period", "eos"))
    dropout: str = opt("on", "the language model's own dropout while training, in training generation and the "
                             "teacher-forced pass (on: the authors' code, which trains GPT-2 in train mode); "
                             "evaluation never uses it", ("on", "off"))
    sender_clip: Optional[str] = opt(None, "CLIP giving the sender's image features, if not the retriever's "
                                           "(hub id, directory or OpenAI .pt)")


@dataclass
class ReceiverOptions:
    """The frozen retriever."""

    receiver: str = opt("clip-vit-b32", "frozen retriever(s), comma-separated: clip-vit-b32 (the paper's), "
                                        "clip-vit-b16, clip-vit-l14, siglip-base, a name another package "
                                        "registers (entry-point group egg_zoo_discritune.receivers), a CLIP or "
                                        "SigLIP hub id or HF directory, or an OpenAI CLIP .pt; the first one's "
                                        "image features feed ClipCap")
    receiver_tokenizer: Optional[str] = opt(None, "CLIP tokenizer (hub id or directory) for an OpenAI .pt retriever")
    trust_torchscript: bool = opt(False, "read OpenAI CLIP .pt files that are TorchScript archives (what clip.load "
                                         "downloads), for the retriever and --sender_clip: loading one deserialises "
                                         "the code it carries, so only for files from a source you trust")
    similarity: str = opt("scaled_cosine", "caption-image score: the retriever's own logits, logit_scale.exp() x "
                                           "cosine (100 x cosine for released CLIP; the authors' code), plain "
                                           "cosine, or the dot product of the unnormalised embeddings",
                          ("scaled_cosine", "cosine", "dot"))
