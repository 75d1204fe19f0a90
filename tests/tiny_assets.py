"""Tiny models and data in the real file formats, made by the tests (no downloads).

- GPT-2: ``save_pretrained`` directory (config + GPT2Tokenizer vocab.json/merges.txt);
- ClipCap: a state dict in the original ``coco_weights.pt`` key layout, legacy attention buffers included;
- CLIP: a Hugging Face directory (model, CLIPTokenizer, CLIPImageProcessor);
- images: PNG files of coloured shapes and a Karpathy ``dataset_coco.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

GPT2_EMBED = 32
CLIP_DIM = 16
PREFIX_LENGTH = 4
IMAGE_SIZE = 32
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220), "yellow": (230, 220, 40)}
SHAPES = ("circle", "square")


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_gpt2(directory: Path) -> Path:
    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    eos = vocab["<|endoftext|>"]
    config = GPT2Config(vocab_size=len(vocab), n_embd=GPT2_EMBED, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=eos, eos_token_id=eos)
    config.save_pretrained(directory)
    return directory


def clipcap_original_state_dict(gpt2_dir: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """What ``torch.save(ClipCaptionModel.state_dict())`` wrote with transformers ~4.10: ``gpt.*``
    (with the per-block ``attn.bias``/``attn.masked_bias`` buffers) and ``clip_project.model.{0,2}.*``."""
    torch.manual_seed(seed)
    config = GPT2Config.from_pretrained(gpt2_dir)
    state = {f"gpt.{k}": v for k, v in GPT2LMHeadModel(config).state_dict().items()}
    n = config.n_positions
    for i in range(config.n_layer):
        state[f"gpt.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones((n, n), dtype=torch.uint8)).view(1, 1, n, n)
        state[f"gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    hidden = GPT2_EMBED * PREFIX_LENGTH // 2
    state["clip_project.model.0.weight"] = torch.randn(hidden, CLIP_DIM) * 0.1
    state["clip_project.model.0.bias"] = torch.randn(hidden) * 0.1
    state["clip_project.model.2.weight"] = torch.randn(GPT2_EMBED * PREFIX_LENGTH, hidden) * 0.1
    state["clip_project.model.2.bias"] = torch.randn(GPT2_EMBED * PREFIX_LENGTH) * 0.1
    return state


def write_clip_tokenizer(directory: Path) -> CLIPTokenizer:
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_clip_config(vocab_size: int) -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=CLIP_DIM,
    )


def write_clip(directory: Path, seed: int = 0) -> Path:
    tokenizer = write_clip_tokenizer(directory)
    torch.manual_seed(seed)
    CLIPModel(tiny_clip_config(len(tokenizer))).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    return directory


def draw_image(path: Path, colour: str, shape: str, size: int = 48, fmt: str = "PNG") -> None:
    image = Image.new("RGB", (size + 8, size), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    box = (8, 8, size - 8, size - 8)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    image.save(path, format=fmt)


def write_images(directory: Path, n: int) -> list[tuple[str, str]]:
    """``n`` images ``img_<i>.png``; returns the (colour, shape) drawn in each."""
    directory.mkdir(parents=True, exist_ok=True)
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    drawn = []
    for i in range(n):
        colour, shape = combos[i % len(combos)]
        draw_image(directory / f"img_{i}.png", colour, shape)
        drawn.append((colour, shape))
    return drawn


def write_karpathy(root: Path, splits: dict[str, int]) -> Path:
    """COCO-style Karpathy file + images under ``root/<filepath>/``; ``splits`` = images per split."""
    images, index = [], 0
    for split, count in splits.items():
        folder = "train2014" if split == "train" else "val2014"
        (root / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            colour, shape = list(COLOURS)[index % 4], SHAPES[index // 4 % 2]
            name = f"COCO_{folder}_{index:012d}.png"
            draw_image(root / folder / name, colour, shape)
            images.append({
                "filepath": folder, "filename": name, "imgid": index, "cocoid": 100000 + index, "split": split,
                "sentids": [2 * index, 2 * index + 1],
                "sentences": [
                    {"raw": f"A {colour} {shape}.", "tokens": ["a", colour, shape], "imgid": index, "sentid": 2 * index},
                    {"raw": f"a {shape} that is {colour}", "tokens": ["a", shape, "that", "is", colour],
                     "imgid": index, "sentid": 2 * index + 1},
                ],
            })
            index += 1
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


@dataclass
class TinyAssets:
    gpt2: Path
    clipcap_weights: Path
    clip: Path
    coco_root: Path
    coco_json: Path


def make_assets(root: Path) -> TinyAssets:
    gpt2 = write_gpt2(root / "gpt2")
    weights = root / "coco_weights.pt"
    torch.save(clipcap_original_state_dict(gpt2), weights)
    clip = write_clip(root / "clip")
    coco_json = write_karpathy(root / "coco", {"train": 8, "restval": 4, "val": 4, "test": 4})
    return TinyAssets(gpt2, weights, clip, root / "coco", coco_json)


BLIP_WORDS = ["a", "picture", "of", "red", "green", "blue", "yellow", "circle", "square", "small", "big", "the"]


def write_blip(directory: Path, seed: int = 0) -> Path:
    """A tiny BlipForConditionalGeneration saved with its BERT tokenizer and image processor (as the
    Salesforce/blip-image-captioning-* repositories are)."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *BLIP_WORDS]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(directory / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer)
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=vocab.index("[DEC]"), eos_token_id=vocab.index("[SEP]"),
                         sep_token_id=vocab.index("[SEP]"), pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=8),
        projection_dim=CLIP_DIM,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def write_siglip(directory: Path, seed: int = 0) -> Path:
    """A tiny SiglipModel directory (the byte-level CLIP tokenizer stands in for SigLIP's SentencePiece one)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tokenizer = write_clip_tokenizer(directory)
    n = len(tokenizer)
    config = SiglipConfig(
        text_config=dict(vocab_size=n, hidden_size=CLIP_DIM, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=n - 1, eos_token_id=n - 1,
                         bos_token_id=n - 2),
        vision_config=dict(hidden_size=CLIP_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=8),
    )
    torch.manual_seed(seed)
    SiglipModel(config).save_pretrained(directory)
    SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    return directory
