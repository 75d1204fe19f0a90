"""Frozen CLIP retriever (the receiver): scores captions against images.

Loads a Hugging Face CLIP directory or hub id, or an OpenAI ``ViT-B-32.pt`` file (converted on the fly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from transformers import (AutoConfig, AutoTokenizer, CLIPImageProcessorPil, CLIPModel, PreTrainedTokenizerBase,
                          SiglipImageProcessorPil, SiglipModel)

from egg_zoo_discritune.archs.openai_clip import clip_from_openai_state_dict
from egg_zoo_discritune.archs.packed_weights import packed_linears
from egg_zoo_discritune.archs.weights import load_state_dict_file, pretrained_or_error

SIMILARITIES = ("scaled_cosine", "cosine", "dot")
RETRIEVER_MODELS = {"clip": CLIPModel, "siglip": SiglipModel}


class ClipRetriever(nn.Module):
    """A ``Retriever``: ``encode_images`` / ``encode_texts`` give raw (unnormalised) CLIP embeddings;
    ``score`` compares them.

    ``similarity``: ``scaled_cosine`` (CLIP's own logits, ``logit_scale.exp()`` x cosine = 100 x cosine for
    the released CLIP: the authors' code), ``cosine``, or ``dot`` (the dot product of the unnormalised
    embeddings). The parameters are frozen and the module stays in eval mode.
    """

    def __init__(self, model: CLIPModel, tokenizer: PreTrainedTokenizerBase, similarity: str = "scaled_cosine",
                 name: str = "clip", image_processor: Optional[CLIPImageProcessorPil] = None):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {similarity!r}; expected one of {SIMILARITIES}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.similarity = similarity
        self.name = name
        self.image_processor = image_processor
        self.context_length = model.config.text_config.max_position_embeddings
        self.padding = "max_length" if isinstance(model, SiglipModel) else True

    @property
    def _image_positions(self) -> int:
        """Patches plus the class token (CLIP; SigLIP has none)."""
        vision = self.model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 + isinstance(self.model, CLIPModel)

    @property
    def feature_dim(self) -> int:
        return self.model.config.projection_dim if isinstance(self.model, CLIPModel) else \
            self.model.config.text_config.hidden_size

    def train(self, mode: bool = True) -> "ClipRetriever":
        return super().train(False)

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with packed_linears(self.model.vision_model, pixel_values.size(0) * self._image_positions):
            out = self.model.get_image_features(pixel_values=pixel_values.to(self.model.dtype))
        return out.pooler_output.float()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        device = self.model.logit_scale.device
        batch = self.tokenizer(texts, padding=self.padding, truncation=True, max_length=self.context_length,
                               return_tensors="pt").to(device)
        mask = None if isinstance(self.model, SiglipModel) else batch.attention_mask  # SigLIP attends to padding
        with packed_linears(self.model.text_model, batch.input_ids.numel()):
            out = self.model.get_text_features(input_ids=batch.input_ids, attention_mask=mask)
        return out.pooler_output.float()

    def score(self, text_features: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """``[n_texts, n_images]`` similarity matrix."""
        if self.similarity == "dot":
            return text_features @ image_features.t()
        cosine = nn.functional.normalize(text_features, dim=-1) @ nn.functional.normalize(image_features, dim=-1).t()
        return cosine * self.model.logit_scale.exp().float() if self.similarity == "scaled_cosine" else cosine


def image_processor_for(model: CLIPModel | SiglipModel, source: str):
    """The preprocessing saved with the model, else OpenAI's (bicubic resize, centre crop, CLIP mean/std)."""
    path = Path(source)
    if path.is_file() or (path.is_dir() and not (path / "preprocessor_config.json").is_file()):
        return _default(model)
    if isinstance(model, SiglipModel):
        return pretrained_or_error(SiglipImageProcessorPil, source, "the SigLIP image processor")
    return pretrained_or_error(CLIPImageProcessorPil, source, "the CLIP image processor")


def _default(model: CLIPModel) -> CLIPImageProcessorPil:
    size = model.config.vision_config.image_size
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def load_retriever(source: str, tokenizer: Optional[str] = None, similarity: str = "scaled_cosine",
                   trust_torchscript: bool = False) -> tuple[ClipRetriever, CLIPImageProcessorPil]:
    """A frozen retriever and its image preprocessing from a HF directory / hub id or an OpenAI ``.pt`` file.

    ``tokenizer`` (directory or hub id) is needed for ``.pt`` files, which carry no tokenizer; it
    defaults to the source itself for HF models and to ``openai/clip-vit-base-patch32`` for ``.pt`` files.
    ``trust_torchscript``: read a ``.pt`` that is a TorchScript archive (OpenAI's released files).
    """
    if source.endswith((".pt", ".pth", ".bin")) or Path(source).is_file():
        state = load_state_dict_file(Path(source), "the OpenAI CLIP checkpoint", trust_torchscript)
        model = clip_from_openai_state_dict(state)
        tokenizer = tokenizer or "openai/clip-vit-base-patch32"
    else:
        model_type = getattr(pretrained_or_error(AutoConfig, source, "the retriever's config"), "model_type", None)
        if model_type not in RETRIEVER_MODELS:
            raise ValueError(f"{source}: a {model_type!r} model; a retriever is one of {sorted(RETRIEVER_MODELS)}")
        model = pretrained_or_error(RETRIEVER_MODELS[model_type], source, "the retriever")
        tokenizer = tokenizer or source
    text_tokenizer = pretrained_or_error(AutoTokenizer, tokenizer, "the CLIP tokenizer")
    processor = image_processor_for(model, source)
    return ClipRetriever(model, text_tokenizer, similarity, name=source, image_processor=processor), processor
