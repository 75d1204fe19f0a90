"""ClipCap captioner (the sender): CLIP image embedding -> mapper -> GPT-2 prefix -> caption.

``state_dict()`` keys are exactly those of the original ClipCap checkpoints (``gpt.*`` and
``clip_project.*``), so ``coco_weights.pt`` / ``conceptual_weights.pt`` load strictly and the
finetuned model exports back in the same format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerBase
from transformers.activations import GELUTanh, NewGELUActivation

from egg_zoo_discritune.archs.captioner import LanguageModelCaptioner
from egg_zoo_discritune.archs.decoding import (caption_lengths, eos_normalised_log_prob, generate_options,
                                               generation_rows, token_log_probs)
from egg_zoo_discritune.archs.mappers import MLPMapper, TransformerMapper
from egg_zoo_discritune.archs.packed_weights import packed_linears
from egg_zoo_discritune.archs.weights import cpu_state_dict, load_state_dict_file, pretrained_or_error

# Causal-mask buffers that transformers ~4.10 saved in every GPT-2 block; newer versions do not.
_LEGACY_GPT2_BUFFER = re.compile(r"^gpt\.transformer\.h\.\d+\.attn\.(bias|masked_bias)$")

TRAINABLE_PARTS = ("all", "mapper", "gpt2")
STOP_RULES = ("any_period", "period", "eos")
EXPORT_FILE = "clipcap_finetuned.pt"


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, rule: str) -> list[int]:
    """Token ids that end a caption: EOS plus, by ``rule``, the full-stop tokens ("period", the paper),
    every token containing "." ("any_period", the authors' code) or nothing else ("eos")."""
    if rule not in STOP_RULES:
        raise ValueError(f"unknown stop rule {rule!r}; expected one of {STOP_RULES}")
    ids = {tokenizer.eos_token_id}
    if rule != "eos":
        for token, idx in tokenizer.get_vocab().items():
            if "." not in token:
                continue
            if rule == "any_period" or tokenizer.convert_tokens_to_string([token]).strip() == ".":
                ids.add(idx)
    return sorted(ids)


def use_fused_gelu(gpt: GPT2LMHeadModel) -> None:
    """GPT-2's ``gelu_new`` written as five tensor ops (pow, mul, add, tanh, mul) is the same function as
    torch's fused ``gelu(approximate="tanh")`` (HF's ``gelu_pytorch_tanh``; in fp32 they differ by one
    rounding step at most); the fused one is 3x faster forward and backward, keeps one activation instead
    of five for the backward pass, and in bf16 rounds once instead of after every op."""
    for block in gpt.transformer.h:
        if type(block.mlp.act) is NewGELUActivation:
            block.mlp.act = GELUTanh()


class ClipCapSender(LanguageModelCaptioner):
    """A ``Captioner`` reading CLIP image features: ``generate`` (no grad), ``log_probs`` (teacher-forced)."""

    export_file = EXPORT_FILE

    def __init__(self, gpt: GPT2LMHeadModel, clip_project: nn.Module, tokenizer: PreTrainedTokenizerBase,
                 stop_rule: str = "any_period", trainable: str = "all", dropout: bool = False):
        super().__init__(tokenizer, dropout)
        use_fused_gelu(gpt)
        self.gpt = gpt
        self.clip_project = clip_project
        self.stop_ids = stop_token_ids(tokenizer, stop_rule)
        self.set_trainable(trainable)
        self.train()

    @property
    def pad_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def feature_dim(self) -> int:
        return next(m for m in self.clip_project.modules() if isinstance(m, nn.Linear)).in_features

    def language_model(self) -> nn.Module:
        return nn.ModuleList([self.gpt, self.clip_project])

    def set_trainable(self, parts: str) -> None:
        if parts not in TRAINABLE_PARTS:
            raise ValueError(f"unknown trainable parts {parts!r}; expected one of {TRAINABLE_PARTS}")
        self.clip_project.requires_grad_(parts in ("all", "mapper"))
        self.gpt.requires_grad_(parts in ("all", "gpt2"))

    def prefix(self, features: torch.Tensor) -> torch.Tensor:
        return self.clip_project(features.to(self.gpt.dtype))

    @torch.no_grad()
    def generate(self, features: torch.Tensor, mode: str = "greedy", max_new_tokens: int = 40,
                 num_beams: int = 5, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions as token ids ``[B, T]`` padded with EOS, and their lengths (the stop token included)."""
        prefix = self.prefix(features)
        with packed_linears(self.gpt, generation_rows(prefix.size(0), mode, num_beams)):
            tokens = self.gpt.generate(
                inputs_embeds=prefix,
                attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
                max_new_tokens=max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                **generate_options(mode, num_beams, temperature),
            )
        return tokens, caption_lengths(tokens, self.stop_ids)

    def log_probs(self, features: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                  temperature: float = 1.0, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities and entropies ``[B, T]`` of ``tokens``, zero past each length."""
        prefix = self.prefix(features)
        # A sparse gradient for the looked-up rows: autograd adds it to the tied LM head's dense gradient (one
        # [V, D] copy) instead of zero-filling a second dense one and adding the two.
        # AOTAutograd cannot trace sparse gradients, and Inductor needs no such help.
        words = F.embedding(tokens, self.gpt.transformer.wte.weight, sparse=not torch.compiler.is_compiling())
        embeds = torch.cat([prefix, words], dim=1)
        # Logits at the last prefix position and every caption position but the last predict the tokens;
        # only those go through the LM head, into one contiguous [B, T, V] tensor.
        predicting = torch.arange(tokens.size(1), device=tokens.device) + prefix.size(1) - 1
        # GPT-2's products have B * positions rows, where oneDNN pays; the mapper's have B, too few.
        with packed_linears(self.gpt, embeds.shape[0] * embeds.shape[1]):
            logits = self.gpt(inputs_embeds=embeds, logits_to_keep=predicting).logits
        return token_log_probs(logits, tokens, lengths, temperature, entropy_grad)

    def authors_log_prob(self, token_logp: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                         max_new_tokens: int) -> torch.Tensor:
        return eos_normalised_log_prob(token_logp, tokens, lengths, self.tokenizer.eos_token_id, max_new_tokens)

    def export(self) -> dict[str, torch.Tensor]:
        """The weights in the original ClipCap file layout, legacy GPT-2 attention buffers included,
        so the original ClipCap code (transformers ~4.10) loads the export strictly."""
        state = cpu_state_dict(self)
        n = self.gpt.config.n_positions
        causal = torch.tril(torch.ones((n, n), dtype=torch.uint8)).view(1, 1, n, n)
        for i in range(self.gpt.config.n_layer):
            state[f"gpt.transformer.h.{i}.attn.bias"] = causal.clone()
            state[f"gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        return state

    def load_clipcap_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Strict load of a ClipCap state dict; the legacy GPT-2 attention buffers are dropped."""
        self.load_state_dict({k: v for k, v in state.items() if not _LEGACY_GPT2_BUFFER.match(k)}, strict=True)


def _mapper_from_state(state: dict[str, torch.Tensor], embed_dim: int) -> nn.Module:
    """Rebuilds the mapper whose shapes the checkpoint holds (MLP or transformer)."""
    if "clip_project.model.0.weight" in state:
        clip_dim = state["clip_project.model.0.weight"].shape[1]
        prefix_length = state["clip_project.model.2.weight"].shape[0] // embed_dim
        return MLPMapper(clip_dim, embed_dim, prefix_length)
    if "clip_project.linear.weight" in state:
        linear = state["clip_project.linear.weight"]
        layers = {int(k.split(".")[3]) for k in state if k.startswith("clip_project.transformer.layers.")}
        hidden = state["clip_project.transformer.layers.0.mlp.fc1.weight"].shape[0]
        return TransformerMapper(linear.shape[1], embed_dim, state["clip_project.prefix_const"].shape[0],
                                 linear.shape[0] // embed_dim, len(layers), mlp_ratio=hidden / embed_dim)
    raise ValueError("not a ClipCap state dict: it has neither clip_project.model.* (MLP mapper) "
                     "nor clip_project.linear.* (transformer mapper) keys")


def build_clipcap(gpt2: str, weights: Optional[str] = None, mapping: str = "mlp", clip_dim: int = 512,
                  prefix_length: int = 10, clip_length: int = 10, num_layers: int = 8,
                  stop_rule: str = "any_period", trainable: str = "all", dropout: bool = False) -> ClipCapSender:
    """A ClipCap sender. ``gpt2`` (hub id or directory) gives the GPT-2 config and tokenizer; ``weights``
    a ClipCap state dict file (mapper + GPT-2). Without ``weights`` GPT-2 is loaded pretrained from
    ``gpt2`` and the mapper starts at random."""
    tokenizer = pretrained_or_error(AutoTokenizer, gpt2, "the GPT-2 tokenizer")
    if weights is None:
        gpt = pretrained_or_error(GPT2LMHeadModel, gpt2, "GPT-2")
        embed_dim = gpt.config.n_embd
        if mapping == "mlp":
            mapper = MLPMapper(clip_dim, embed_dim, prefix_length)
        elif mapping == "transformer":
            mapper = TransformerMapper(clip_dim, embed_dim, prefix_length, clip_length, num_layers)
        else:
            raise ValueError(f"unknown mapping {mapping!r}; expected mlp or transformer")
        return ClipCapSender(gpt, mapper, tokenizer, stop_rule, trainable, dropout)
    state = load_state_dict_file(Path(weights), "the ClipCap checkpoint (--clipcap_weights)")
    config = pretrained_or_error(AutoConfig, gpt2, "the GPT-2 config")
    sender = ClipCapSender(GPT2LMHeadModel(config), _mapper_from_state(state, config.n_embd), tokenizer,
                           stop_rule, trainable, dropout)
    try:
        sender.load_clipcap_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{weights}: does not match the GPT-2 config of {gpt2!r}: {err}") from err
    return sender
