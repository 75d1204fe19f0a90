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

from egg_zoo_discritune.archs.options import ReceiverOptions, SenderOptions
from egg_zoo_discritune.data_loaders.options import DataOptions
from egg_zoo_discritune.games.options import GameOptions
from egg_zoo_discritune.options import opt
from egg_zoo_discritune.precision import PRECISIONS


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
    preemptable: bool = opt(False, "EGG's preemption: when --checkpoint_dir holds a checkpoint, continue from the "
                                   "newest one, else start there, so a rescheduled job reruns the same command")
    no_cuda: bool = opt(False, "run on the CPU even when a GPU is available")
    batch_size: int = opt(100, "images per update; each image's caption is scored against all images of the batch")
    optimizer: str = opt("adam", "optimizer", ("adam", "adamw", "sgd"))
    lr: float = opt(1e-7, "learning rate (constant)")
    update_freq: int = opt(1, "accumulate gradients over N batches per update")
    fp16: bool = opt(False, "mixed precision with float16 autocast and loss scaling (CUDA only); same as "
                            "--precision fp16")
    precision: str = opt("auto", "autocast dtype of the networks, with fp32 master weights: auto (bf16 where it is "
                                 "native and faster: CUDA compute capability >= 8.0, or a CPU with AVX512_BF16 or "
                                 "AMX whose bf16 matrix product a startup probe finds faster; else fp32), fp32, "
                                 "bf16, fp16 (CUDA, with loss scaling)", PRECISIONS)
    compile: bool = opt(False, "torch.compile the teacher-forced pass (the captioner's forward and backward over "
                               "its captions): minutes of compiling at the start, faster updates after "
                               "(bench/README.md); runs eagerly, with a warning, where compiling is unavailable")
    tensorboard: bool = opt(False, "EGG's TensorboardLogger: loss and aux means per epoch to --tensorboard_dir "
                                   "(needs EGG and the tensorboard package)")
    tensorboard_dir: str = opt("runs/", "where --tensorboard writes its event files")
    grad_norm: Optional[float] = opt(None, "clip the gradient norm to this value (default: no clipping, as the paper)")

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"--batch_size {self.batch_size}: the batch's other images are each caption's "
                             "distractors, so a batch needs at least 2 (the paper: 100)")


@dataclass
class DecodingOptions:
    """How captions are written for evaluation and captioning."""

    decoding: str = opt("beam", "caption decoding: beam search (the paper) or greedy", ("beam", "greedy"))
    beam_size: int = opt(5, "beams (the paper: 5)")
    max_len: int = opt(30, "maximum caption tokens (the authors' code: 30)")
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
    save_interactions: bool = opt(False, "EGG's InteractionSaver: each validation's interaction (captions as token "
                                         "ids and lengths, labels, P@1, rewards) to <run>/interactions/validation/"
                                         "epoch_<k>/; read one with egg_zoo_discritune.engine.interaction."
                                         "load_interactions")


@dataclass
class TrainConfig:
    egg: EggOptions = field(default_factory=EggOptions)
    data: DataOptions = field(default_factory=DataOptions)
    sender: SenderOptions = field(default_factory=SenderOptions)
    receiver: ReceiverOptions = field(default_factory=ReceiverOptions)
    game: GameOptions = field(default_factory=GameOptions)
    run: RunOptions = field(default_factory=RunOptions)


# Each preset is knob -> (value, where that value comes from). The paper-* presets are the authors'
# code point by point (it produced the paper's numbers; DESIGN §1), checked against it on one update.
PAPER = "the paper's text"
CODE = "the authors' code (v2, de1e383)"
SWEEP = "the authors' sweep files"
_PAPER_CLIPCAP: dict[str, tuple[Any, str]] = {
    "batch_size": (100, f"{PAPER}: 1 target + 99 in-batch distractors"),
    "optimizer": ("adam", f"{CODE}: torch Adam, default betas, no weight decay"),
    "lr": (1e-7, f"{PAPER}; {SWEEP}"),
    "grad_norm": (None, f"{CODE}: no gradient clipping"),
    "random_seed": (111, f"{SWEEP}: first of the seeds 111..777"),
    "receiver": ("clip-vit-b32", f"{PAPER}: frozen CLIP ViT-B/32"),
    "similarity": ("scaled_cosine", f"{CODE}: ClipReceiver scales cosine by CLIP's logit_scale.exp() (100)"),
    "reward": ("discriminative", f"{PAPER}: log-probability of the target; {CODE}: cross-entropy"),
    "baseline": ("mean", f"{SWEEP}: --baseline mean, EGG's MeanBaseline"),
    "normalize_advantage": (False, CODE),
    "entropy_coeff": (0.0, CODE),
    "kl_coeff": (0.0, f"{SWEEP}: --kl_div_coeff 0 in the final runs"),
    "samples_per_image": (1, CODE),
    "train_decoding": ("greedy", f"{PAPER}; {SWEEP}: beam 1, no sampling"),
    "test_decoding": ("beam", f"{CODE}: ClipCap evaluates with beam search regardless of training"),
    "beam_size": (5, f"{CODE}: num_beams=5 at test"),
    "max_len": (30, f"{CODE}: --max_len 40 counts the 10 prefix positions"),
    "stop_rule": ("any_period", f"{CODE}: StopTokenLogitsProcessor forces EOS after any token containing '.'"),
    "logprob_reduction": ("authors", f"{CODE}: sum of log-probs before EOS / (that count + 1)"),
    "dropout": ("on", f"{CODE}: GPT-2 in train mode in generation and the teacher-forced pass"),
    "precision": ("fp32", f"{CODE}: fp32, no autocast"),
    "trainable": ("all", f"{CODE}: mapper and GPT-2 (there the token embeddings are effectively frozen by their "
                         "vocabulary patch; not replicated)"),
}
PRESETS: dict[str, dict[str, tuple[Any, str]]] = {
    "paper-coco": {
        **_PAPER_CLIPCAP,
        "dataset": ("coco", PAPER),
        "include_restval": (True, f"{CODE}: Karpathy train + restval, 113,287 images"),
        "n_epochs": (20, f"{PAPER}; {SWEEP}"),
        "clipcap_weights": ("coco_weights.pt", "ClipCap's released COCO MLP weights"),
    },
    "paper-concap": {
        **_PAPER_CLIPCAP,
        "dataset": ("conceptual", PAPER),
        "n_epochs": (2, f"{PAPER}; {SWEEP}"),
        "clipcap_weights": ("conceptual_weights.pt", "ClipCap's released Conceptual Captions MLP weights"),
    },
    "paper-blip": {
        **{k: v for k, v in _PAPER_CLIPCAP.items() if k not in ("stop_rule", "trainable")},
        "dataset": ("coco", PAPER),
        "include_restval": (True, f"{CODE}: Karpathy train + restval"),
        "sender": ("blip-base", f"{PAPER}: BLIP base finetuned on COCO"),
        "n_epochs": (1, f"{PAPER} (the authors' BLIP seed sweep ran 3)"),
        "test_decoding": ("greedy", f"{CODE}: BlipSender asserts beam_size == 1, in training and test"),
        "max_len": (36, f"{CODE}: --max_len 40 counts BLIP's 4 prompt positions ([DEC] a picture of)"),
        "logprob_reduction": ("authors", f"{CODE}: BLIP's mean over the tokens up to [SEP], [SEP] included"),
        "dropout": ("on", f"{CODE}: the text decoder in train mode"),
    },
    # The offline miniature (DESIGN §7): tiny models made here, so its recipe is this package's own, not
    # the paper's: sampling explores captions the vague captioner rarely writes greedily.
    "demo": {
        "dataset": ("generic", "the toy world's JSONL manifests"),
        "gpt2": (None, "the toy world's GPT-2"),
        "receiver": (None, "the toy world's CLIP"),
        "n_epochs": (8, "tuned on the toy world"),
        "batch_size": (100, PAPER),
        "lr": (2e-4, "tuned on the toy world (tiny models move slower per step than GPT-2 at 1e-7)"),
        "similarity": ("scaled_cosine", CODE),
        "train_decoding": ("sample", "this package: exploration for the vague captioner"),
        "normalize_advantage": (True, "this package"),
        "logprob_reduction": ("mean", "this package"),
        "stop_rule": ("period", "the toy captions end at '.'"),
        "dropout": ("off", "this package: samples and their log-probs from the same network"),
        "max_len": (20, "toy captions are short"),
        "kl_coeff": (0.2, "this package: without it the tiny GPT-2 drifts into run-on captions, differently on "
                          "every machine and seed (issue #12)"),
        "precision": ("fp32", "the README's demo numbers are fp32; tiny models gain nothing from bf16"),
        "validation_freq": (4, "this package"),
        "num_workers": (2, "the 2-core machine"),
        "log_every": (20, "this package"),
    },
}


def preset_table(name: str) -> str:
    """``knob = value  (source)`` lines of one preset."""
    knobs = PRESETS[name]
    width = max(len(f"{k}={v}") for k, (v, _) in knobs.items())
    return "\n".join(f"  --{f'{k}={v}':<{width}}  {source}" for k, (v, source) in knobs.items())


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


def build_parser(preset: Optional[str] = None) -> argparse.ArgumentParser:
    """The training command's parser; with ``preset`` its defaults are the preset's and ``--help`` lists them
    with their sources."""
    epilog = (f"preset {preset}, every knob and where its value comes from:\n{preset_table(preset)}" if preset else
              f"presets: {', '.join(PRESETS)} (--preset NAME --help lists every knob of one and its source)")
    parser = argparse.ArgumentParser(
        prog="python -m egg.zoo.discritune.train", epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Discriminative finetuning of an image captioner with REINFORCE against a frozen CLIP retriever.",
    )
    for _, cls in _GROUPS:
        add_options(parser, cls)
    if preset is not None:
        parser.set_defaults(**{k: v for k, (v, _) in PRESETS[preset].items()})
    return parser


def parse_config(argv: Sequence[str]) -> TrainConfig:
    """Flags -> ``TrainConfig``; a ``--preset`` supplies defaults that explicit flags override."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset")
    preset = first.parse_known_args(argv)[0].preset
    if preset is not None and preset not in PRESETS:
        build_parser().error(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    namespace = build_parser(preset).parse_args(argv)
    return TrainConfig(**{name: options_from(namespace, cls) for name, cls in _GROUPS})
