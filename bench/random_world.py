"""A random world in the real file formats, for timing ``--preset paper-coco`` end to end without downloads:

    python bench/random_world.py --out /tmp/world --train_images 5000 [--tiny]

writes a GPT-2 directory (config + tokenizer), ClipCap weights in the original ``coco_weights.pt`` layout
(random MLP mapper + GPT-2 small), a Hugging Face CLIP ViT-B/32 directory (random weights, tokenizer,
preprocessing), noise JPEGs and a Karpathy ``dataset_coco.json`` over them, and prints the training flags
that point at it. The models are those of ``bench/speed.py``; with random weights a caption stops only when
a stop token happens to come up, so most run to the maximum length.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from speed import build_models


def write_images(root: Path, splits: dict[str, int]) -> Path:
    """Noise JPEGs (256x256) under ``root/train2014`` and ``root/val2014`` and their Karpathy file."""
    images, index = [], 0
    for split, count in splits.items():
        folder = "train2014" if split == "train" else "val2014"
        (root / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            name = f"COCO_{folder}_{index:012d}.jpg"
            Image.effect_noise((256, 256), 64).convert("RGB").save(root / folder / name, quality=85)
            sentence = {"raw": "a random image.", "tokens": ["a", "random", "image"], "imgid": index, "sentid": index}
            images.append({"filepath": folder, "filename": name, "imgid": index, "cocoid": index, "split": split,
                           "sentids": [index], "sentences": [sentence]})
            index += 1
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def main(argv: Optional[list[str]] = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the world into")
    parser.add_argument("--train_images", type=int, default=5000, help="training images (100 per update at batch 100)")
    parser.add_argument("--val_images", type=int, default=200, help="validation images")
    parser.add_argument("--tiny", action="store_true", help="two narrow layers per model (a dry run)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sender, retriever = build_models(out, 0, tiny=args.tiny)
    sender.gpt.config.save_pretrained(out / "gpt2")
    sender.tokenizer.save_pretrained(out / "gpt2")
    torch.save(sender.export(), out / "clipcap_weights.pt")
    retriever.model.save_pretrained(out / "clip")
    retriever.tokenizer.save_pretrained(out / "clip")
    retriever.image_processor.save_pretrained(out / "clip")
    annotations = write_images(out, {"train": args.train_images, "val": args.val_images})
    flags = ["--gpt2", str(out / "gpt2"), "--clipcap_weights", str(out / "clipcap_weights.pt"), "--receiver",
             str(out / "clip"), "--annotations", str(annotations), "--data_root", str(out)]
    print(" ".join(flags))
    return flags


if __name__ == "__main__":
    main()
