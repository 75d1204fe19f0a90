"""Typed options of the training command, one dataclass per concern, and the paper's presets.

Every field becomes a command-line flag of the same name; its help text is the field's metadata.
EGG's common flags keep EGG's names and meanings (``--batch_size --lr --n_epochs --random_seed
--checkpoint_dir --fp16 ...``); only their defaults follow the paper (EGG's ``--max_len`` default of 1
would make one-token captions).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


def opt(default: Any, help: str, choices: Optional[Sequence] = None) -> Any:
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class EggOptions:
    """EGG's common flags."""

    random_seed: int = opt(111, "seed of every random number generator (the paper's first seed)")
    checkpoint_dir: Optional[str] = opt(None, "run directory: config, logs, checkpoints, exported captioner "
                                              "(default: runs/<preset>-<time>)")
    checkpoint_freq: int = opt(1, "save a checkpoint every N epochs (0: only at the end)")
    validation_freq: int = opt(1, "evaluate on the validation split every N epochs (0: never)")
    n_epochs: int = opt(20, "number of epochs")
    load_from_checkpoint: Optional[str] = opt(None, "start from this checkpoint (.tar) of an earlier run")
    no_cuda: bool = opt(False, "run on the CPU even when a GPU is available")
    batch_size: int = opt(100, "images per update; each image's caption is scored against all images of the batch")
    optimizer: str = opt("adam", "optimizer", ("adam", "adamw", "sgd"))
    lr: float = opt(1e-7, "learning rate (constant)")
    update_freq: int = opt(1, "accumulate gradients over N batches per update")
    max_len: int = opt(40, "maximum number of caption tokens (the paper's 40; the authors' code allows 30)")
    fp16: bool = opt(False, "mixed precision with float16 autocast and loss scaling (CUDA only); same as "
                            "--precision fp16")
    precision: str = opt("fp32", "autocast dtype of the networks, with fp32 master weights: fp32, bf16 (CPU and "
                                 "recent GPUs), fp16 (CUDA, with loss scaling)", ("fp32", "bf16", "fp16"))
    grad_norm: Optional[float] = opt(None, "clip the gradient norm to this value (default: no clipping, as the paper)")


@dataclass
class DataOptions:
    """What images the game is played on."""

    dataset: str = opt("coco", "training data format", ("coco", "conceptual", "generic"))
    data_root: Optional[str] = opt(None, "image root (coco: the folder holding train2014/ and val2014/; "
                                         "conceptual: the folder with the TSVs and training/, validation/; "
                                         "generic: a folder of images)")
    annotations: Optional[str] = opt(None, "coco: dataset_coco.json (Karpathy splits); generic: a JSONL/CSV manifest")
    val_annotations: Optional[str] = opt(None, "the validation images when --data_root holds training images only: "
                                               "generic: a folder or manifest; conceptual: the img2dataset folder "
                                               "of the validation split")
    train_split: str = opt("train", "split to train on")
    val_split: str = opt("val", "split to validate on (P@1 over consecutive blocks of --batch_size images)")
    include_restval: bool = opt(False, "coco: add Karpathy 'restval' to 'train' (113K images; the paper uses train)")
    max_train_images: int = opt(0, "use only the first N training images (0: all)")
    max_val_images: int = opt(0, "use only the first N validation images (0: all)")
    num_workers: int = opt(4, "DataLoader worker processes that decode images")
    stream: bool = opt(False, "conceptual: stream the training split's img2dataset shards (--data_root: NNNNN.tar "
                              "or NNNNN/ folders) sequentially through a shuffle buffer, for millions of images")
    shuffle_buffer: int = opt(1000, "--stream: images each DataLoader worker shuffles among")
    feature_cache: Optional[str] = opt(None, "read the images' CLIP features from this cache (made by "
                                             "python -m egg_zoo_discritune.extract_features) instead of pixels")


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
    stop_rule: str = opt("period", "where captions end: at a full stop (the paper), after any token containing '.' "
                                   "(the authors' code) or only at EOS", ("period", "any_period", "eos"))
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
    receiver_mode: str = opt("alternate", "with several retrievers: each batch's reward from the next retriever "
                                          "in turn, or the average of their rewards", ("alternate", "average"))
    receiver_tokenizer: Optional[str] = opt(None, "CLIP tokenizer (hub id or directory) for an OpenAI .pt retriever")
    similarity: str = opt("dot", "caption-image score: dot product of CLIP embeddings (the paper), cosine, or "
                                 "100 x cosine (the authors' code)", ("dot", "cosine", "scaled_cosine"))


@dataclass
class GameOptions:
    """The reward and the REINFORCE update."""

    reward: str = opt("discriminative", "log-probability of the target image (the paper), retrieval accuracy, "
                                        "or caption-image similarity", ("discriminative", "accuracy", "similarity"))
    baseline: str = opt("mean", "running mean of all rewards so far (EGG's MeanBaseline, the paper), exponential "
                                "moving average, leave-one-out (over the other samples of the same image with "
                                "--samples_per_image > 1, else over the batch), or none",
                        ("mean", "exponential", "loo", "none"))
    baseline_decay: float = opt(0.9, "decay of the exponential baseline")
    normalize_advantage: bool = opt(False, "standardise advantages over the batch")
    logprob_reduction: str = opt("sum", "caption log-probability: sum of token log-probs (REINFORCE) or their mean "
                                        "(the authors' code)", ("sum", "mean"))
    entropy_coeff: float = opt(0.0, "weight of the entropy bonus")
    kl_coeff: float = opt(0.0, "weight of a KL penalty to the initial captioner, subtracted from the reward "
                               "(a frozen copy of the captioner is kept only when > 0)")
    samples_per_image: int = opt(1, "captions sampled per training image (> 1 needs --train_decoding sample)")
    micro_batch: int = opt(0, "teacher-forced log-prob pass in chunks of N captions, recomputed in the backward "
                                "pass, so a large batch fits a small GPU (0: the whole batch at once)")
    train_decoding: str = opt("greedy", "decoding during training", ("greedy", "sample"))
    temperature: float = opt(1.0, "sampling temperature (--train_decoding sample; top-k and top-p are off)")
    test_decoding: str = opt("beam", "decoding for validation", ("beam", "greedy"))
    beam_size: int = opt(5, "beams for --test_decoding beam")


@dataclass
class DecodingOptions:
    """How captions are written for evaluation and captioning."""

    decoding: str = opt("beam", "caption decoding: beam search (the paper) or greedy", ("beam", "greedy"))
    beam_size: int = opt(5, "beams (the paper: 5)")
    max_len: int = opt(40, "maximum caption tokens")
    batch_size: int = opt(100, "images per captioning batch")
    num_workers: int = opt(4, "DataLoader worker processes that decode images")
    no_cuda: bool = opt(False, "run on the CPU even when a GPU is available")


@dataclass
class RunOptions:
    """The run itself."""

    preset: Optional[str] = opt(None, "defaults of a recipe, overridable flag by flag (see --help's end)")
    engine: str = opt("auto", "egg.core when importable (auto), EGG required (egg), or the built-in engine",
                      ("auto", "egg", "builtin"))
    resume: bool = opt(False, "continue the run in --checkpoint_dir from its newest checkpoint")
    log_every: int = opt(50, "write running means to log.jsonl every N updates")
    toy_dir: str = opt("~/.cache/discritune/toyworld", "--preset demo: where the toy world is built on first use")
    demo_report: bool = opt(True, "--preset demo: evaluate the vanilla and finetuned captioners after training")


@dataclass
class TrainConfig:
    egg: EggOptions = field(default_factory=EggOptions)
    data: DataOptions = field(default_factory=DataOptions)
    sender: SenderOptions = field(default_factory=SenderOptions)
    receiver: ReceiverOptions = field(default_factory=ReceiverOptions)
    game: GameOptions = field(default_factory=GameOptions)
    run: RunOptions = field(default_factory=RunOptions)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's recipe (DESIGN §1): Adam 1e-7, batch 100 with in-batch distractors, greedy in training,
    # beam 5 in testing, at most 40 tokens, running-mean baseline, frozen CLIP ViT-B/32 retriever.
    "paper-coco": dict(dataset="coco", n_epochs=20, batch_size=100, lr=1e-7, clipcap_weights="coco_weights.pt",
                       baseline="mean", train_decoding="greedy", test_decoding="beam", beam_size=5, max_len=40),
    # The offline miniature (DESIGN §7): tiny models made here, so its settings differ from the paper's
    # (see README): sampling explores captions the vague captioner rarely writes greedily.
    "demo": dict(dataset="generic", gpt2=None, receiver=None, n_epochs=8, batch_size=100, lr=2e-4, similarity="scaled_cosine",
                 train_decoding="sample", normalize_advantage=True, logprob_reduction="mean", max_len=20,
                 validation_freq=4, num_workers=2, log_every=20),
    # BLIP-COCO (DESIGN §1): 1 epoch; captions end at BLIP's [SEP] (the end token), not at a full stop.
    "paper-blip": dict(dataset="coco", sender="blip-base", n_epochs=1, batch_size=100, lr=1e-7, baseline="mean",
                       train_decoding="greedy", test_decoding="beam", beam_size=5, max_len=40),
    "paper-concap": dict(dataset="conceptual", n_epochs=2, batch_size=100, lr=1e-7,
                         clipcap_weights="conceptual_weights.pt", baseline="mean", train_decoding="greedy",
                         test_decoding="beam", beam_size=5, max_len=40),
}


_GROUPS = [(name, f.default_factory) for name, f in TrainConfig.__dataclass_fields__.items()]


def _field_type(cls: type, f: dataclasses.Field) -> type:
    tp = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return args[0]
    return tp


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the dataclass ``cls``, in a group named after it; list fields take several values."""
    group = parser.add_argument_group(cls.__name__.replace("Options", ""), cls.__doc__)
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kwargs = dict(default=default, help=f"{f.metadata['help']} (default: %(default)s)")
        if tp is bool:  # --flag / --no-flag, so a preset's True can be switched off
            group.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(tp) is list:
            group.add_argument(f"--{f.name}", type=typing.get_args(tp)[0], nargs="+",
                               choices=f.metadata["choices"], **kwargs)
        else:
            group.add_argument(f"--{f.name}", type=tp, choices=f.metadata["choices"], **kwargs)


def options_from(namespace: argparse.Namespace, cls: type) -> Any:
    return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m egg.zoo.discritune.train",
        description="Discriminative finetuning of an image captioner with REINFORCE against a frozen CLIP retriever.",
        epilog="presets: " + "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in PRESETS.items()),
    )
    for _, cls in _GROUPS:
        add_options(parser, cls)
    return parser


def parse_config(argv: Sequence[str]) -> TrainConfig:
    """Flags -> ``TrainConfig``; a ``--preset`` supplies defaults that explicit flags override."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset is not None:
        if preset not in PRESETS:
            parser.error(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        parser.set_defaults(**PRESETS[preset])
    namespace = parser.parse_args(argv)
    return TrainConfig(**{name: options_from(namespace, cls) for name, cls in _GROUPS})
