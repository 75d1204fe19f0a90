"""Pretraining of the toy world's components, with the package's own architectures at tiny sizes:
a byte-level BPE tokenizer, a CLIP trained contrastively on images and descriptive captions, a GPT-2
language model on text of both styles, and ClipCap captioners trained by maximum likelihood."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch
from tokenizers import ByteLevelBPETokenizer, Tokenizer
from tokenizers.processors import TemplateProcessing
from transformers import CLIPConfig, CLIPModel, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, PreTrainedTokenizerFast

from egg_zoo_discritune.archs.clipcap import ClipCapSender
from egg_zoo_discritune.archs.mappers import MLPMapper

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def train_tokenizers(corpus: Sequence[str], gpt2_dir: Path, clip_dir: Path, vocab_size: int = 400
                     ) -> tuple[GPT2TokenizerFast, PreTrainedTokenizerFast]:
    """One byte-level BPE vocabulary: saved as GPT-2 files for the captioner, and with start/end tokens
    added around every text for CLIP (whose text tower pools at the end token)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, BOS],
                            show_progress=False)
    gpt2_dir.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(gpt2_dir))
    gpt2_tokenizer = GPT2TokenizerFast(str(gpt2_dir / "vocab.json"), str(gpt2_dir / "merges.txt"),
                                       eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS)
    gpt2_tokenizer.save_pretrained(gpt2_dir)
    clip_backend = Tokenizer.from_str(bpe._tokenizer.to_str())
    clip_backend.post_processor = TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bpe.token_to_id(BOS)), (EOS, bpe.token_to_id(EOS))])
    clip_tokenizer = PreTrainedTokenizerFast(tokenizer_object=clip_backend, bos_token=BOS, eos_token=EOS,
                                             pad_token=EOS, model_max_length=64)
    clip_tokenizer.save_pretrained(clip_dir)
    return gpt2_tokenizer, clip_tokenizer


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        yield order[position:position + batch_size]
        position += batch_size


def train_clip(pixels: torch.Tensor, captions: Sequence[str], tokenizer: PreTrainedTokenizerFast, steps: int,
               batch_size: int = 128, lr: float = 2e-3, seed: int = 0) -> CLIPModel:
    """A tiny CLIP (QuickGELU, as OpenAI's) trained with CLIP's symmetric contrastive loss."""
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, hidden_act="quick_gelu",
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                           image_size=pixels.shape[-1], patch_size=8, hidden_act="quick_gelu"),
        projection_dim=64,
    )
    model = CLIPModel(config).train()
    tokens = tokenizer(list(captions), padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    for idx in _batches(len(captions), batch_size, steps, torch.Generator().manual_seed(seed)):
        loss = model(input_ids=tokens.input_ids[idx], attention_mask=tokens.attention_mask[idx],
                     pixel_values=pixels[idx], return_loss=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def train_language_model(texts: Sequence[str], tokenizer: GPT2TokenizerFast, steps: int, batch_size: int = 128,
                         lr: float = 3e-3, seed: int = 0) -> GPT2LMHeadModel:
    """A tiny GPT-2 pretrained on raw text (the analogue of GPT-2's web text)."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=64,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config).train()
    batch = tokenizer([tokenizer.eos_token + t for t in texts], padding=True, return_tensors="pt")
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    for idx in _batches(len(texts), batch_size, steps, torch.Generator().manual_seed(seed)):
        loss = model(input_ids=batch.input_ids[idx], attention_mask=batch.attention_mask[idx], labels=labels[idx]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def train_clipcap(language_model: GPT2LMHeadModel, tokenizer: GPT2TokenizerFast, features: torch.Tensor,
                  captions: Sequence[Sequence[str]], steps: int, prefix_length: int = 4, batch_size: int = 128,
                  lr: float = 2e-3, seed: int = 0) -> ClipCapSender:
    """ClipCap by maximum likelihood, as the original: mapper and GPT-2 trained together, no EOS learnt
    (captions end with "."). ``captions[i]`` are the references of image ``i``; one is drawn per step."""
    torch.manual_seed(seed)
    mapper = MLPMapper(features.size(1), language_model.config.n_embd, prefix_length)
    sender = ClipCapSender(copy.deepcopy(language_model), mapper, tokenizer)
    optimizer = torch.optim.AdamW(sender.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    for idx in _batches(len(captions), batch_size, steps, generator):
        choice = torch.randint(0, 1 << 30, (len(idx),), generator=generator)
        texts = [captions[i][c % len(captions[i])] for i, c in zip(idx.tolist(), choice.tolist())]
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        token_logp, _ = sender.log_probs(features[idx], batch.input_ids, batch.attention_mask.sum(1))
        loss = -token_logp.sum() / batch.attention_mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return sender.eval()
