"""BLIP captioner (a sender that reads its own pixels) via transformers' ``BlipForConditionalGeneration``.

``Salesforce/blip-image-captioning-base`` (and ``-large``) are BLIP finetuned on COCO captions. The
vision encoder stays frozen; the text decoder is what DiscriTune trains. Log-probabilities come from the
decoder's logits, not from BLIP's label-smoothed loss. Captions follow an optional text prompt
("a picture of ", as BLIP's own captioning) and end at BLIP's end token ([SEP]).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from transformers import AutoProcessor, BlipForConditionalGeneration, PreTrainedTokenizerBase

from egg_zoo_discritune.archs.captioner import LanguageModelCaptioner
from egg_zoo_discritune.archs.decoding import caption_lengths, generate_options, generation_rows, token_log_probs
from egg_zoo_discritune.archs.packed_weights import packed_linears
from egg_zoo_discritune.archs.weights import cpu_state_dict, load_state_dict_file, pretrained_or_error


class BlipSender(LanguageModelCaptioner):
    """A ``Captioner`` that reads its own pixels (``image_processor``), not the retriever's features. The
    text decoder is trained; the vision encoder stays frozen."""

    reads_pixels = True
    export_file = "sender_finetuned.pt"

    def __init__(self, model: BlipForConditionalGeneration, tokenizer: PreTrainedTokenizerBase,
                 image_processor=None, prompt: str = "a picture of ", dropout: bool = False):
        super().__init__(tokenizer, dropout)
        self.model = model
        self.image_processor = image_processor
        text = model.config.text_config
        self.bos_id, self.eos_id, self.pad_id = text.bos_token_id, text.sep_token_id, text.pad_token_id
        # BLIP's captioning prompt: the tokenizer's [CLS] prompt [SEP] with [CLS] -> [DEC] and [SEP] dropped.
        ids = tokenizer(prompt).input_ids[:-1] if prompt else [0]
        self.register_buffer("prompt_ids", torch.tensor([self.bos_id, *ids[1:]]), persistent=False)
        self.model.vision_model.requires_grad_(False)
        self.train()

    def language_model(self) -> nn.Module:
        return self.model.text_decoder

    def _image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        vision = self.model.config.vision_config
        positions = (vision.image_size // vision.patch_size) ** 2 + 1  # patches and the class token
        with torch.no_grad(), packed_linears(self.model.vision_model, pixels.size(0) * positions):
            return self.model.vision_model(pixel_values=pixels.to(self.model.dtype))[0]

    def _prompt(self, n: int) -> torch.Tensor:
        return self.prompt_ids.unsqueeze(0).expand(n, -1)

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor, mode: str = "greedy", max_new_tokens: int = 40, num_beams: int = 5,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption token ids ``[B, T]`` after the prompt, padded, and their lengths ([SEP] included)."""
        embeds = self._image_embeds(pixels)
        prompt = self._prompt(pixels.size(0))
        with packed_linears(self.model.text_decoder, generation_rows(pixels.size(0), mode, num_beams)):
            out = self.model.text_decoder.generate(
                input_ids=prompt, encoder_hidden_states=embeds,
                encoder_attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
                eos_token_id=self.eos_id, pad_token_id=self.pad_id, max_new_tokens=max_new_tokens,
                **generate_options(mode, num_beams, temperature))
        tokens = out[:, prompt.size(1):]
        return tokens, caption_lengths(tokens, [self.eos_id])

    def log_probs(self, pixels: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                  temperature: float = 1.0, entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities and entropies ``[B, T]`` of ``tokens`` given the image and prompt."""
        embeds = self._image_embeds(pixels)
        prompt = self._prompt(tokens.size(0))
        ids = torch.cat([prompt, tokens], 1)
        with packed_linears(self.model.text_decoder, ids.numel()):
            logits = self.model.text_decoder(
                input_ids=ids, encoder_hidden_states=embeds,
                encoder_attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
            ).logits
        # The logit at position p predicts token p + 1: the last prompt position predicts the first token.
        return token_log_probs(logits[:, prompt.size(1) - 1:-1], tokens, lengths, temperature, entropy_grad)

    def export(self) -> dict[str, torch.Tensor]:
        """The whole BLIP state dict (``BlipForConditionalGeneration.load_state_dict`` reads it)."""
        return cpu_state_dict(self.model)


def build_blip(source: str, prompt: str = "a picture of ", weights: Optional[str] = None,
               dropout: bool = False) -> BlipSender:
    """A BLIP sender from a hub id or a ``save_pretrained`` directory (model, tokenizer, image processor);
    ``weights``: a state dict exported by this package, loaded over it."""
    model = pretrained_or_error(BlipForConditionalGeneration, source, "BLIP")
    processor = pretrained_or_error(AutoProcessor, source, "the BLIP processor")
    if weights:
        model.load_state_dict(load_state_dict_file(Path(weights), "the BLIP weights"))
    return BlipSender(model, processor.tokenizer, processor.image_processor, prompt, dropout)
