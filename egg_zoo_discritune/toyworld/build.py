"""Builds the toy world and its pretrained components: ``python -m egg_zoo_discritune.toyworld.build --help``.

Writes into ``--out``: ``images/<split>/*.png`` and ``<split>.jsonl`` manifests (image, descriptive
captions as references, alt-text captions) for train / val / test (in domain) and ood (dark, noisy
backgrounds); ``clip/`` (tiny CLIP + tokenizer + preprocessing); ``gpt2/`` (tiny GPT-2 language model +
tokenizer); ``clipcap_descriptive.pt`` and ``clipcap_alttext.pt`` (ClipCap files); ``build.json``
(sizes, seeds, timings and the retrieval P@1 of the CLIP with human descriptive captions).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from transformers import CLIPImageProcessorPil

from egg_zoo_discritune import cli
from egg_zoo_discritune.archs.clip import ClipRetriever
from egg_zoo_discritune.config import add_options, options_from
from egg_zoo_discritune.options import opt
from egg_zoo_discritune.engine.checkpoint import atomic_save
from egg_zoo_discritune.metrics.retrieval import precision_at_1
from egg_zoo_discritune.toyworld import pretrain
from egg_zoo_discritune.toyworld.world import IMAGE_SIZE, alt_text_caption, descriptive_caption, draw, sample_scene

log = logging.getLogger("discritune")

# Bumped whenever the build's output changes, so a cached world is rebuilt instead of silently differing from a
# fresh one. 2: the fused teacher-forced log-probs round ClipCap's pretraining differently (2026-12-01).
# 3: ClipCap's GPT-2 runs torch's fused tanh GELU and the log-probs use torch's (log-)softmax kernels (2026-12-05).
# 4: the log-probs' backward sets the token's entry to g * (1 - p) from the saved log-prob (2026-12-05).
VERSION = 4
DEFAULT_DIR = "~/.cache/discritune/toyworld"
# clip_ood: out-of-domain images only the retriever is trained on, as CLIP saw far more than COCO.
SPLITS = ("train", "val", "test", "ood", "clip_ood")


@dataclass
class BuildOptions:
    """Sizes and training lengths of the toy world (the defaults build it in a few minutes on 2 cores)."""

    out: str = opt("toyworld", "output folder")
    seed: int = opt(0, "seed of the world and of every model")
    n_train: int = opt(6000, "training images")
    n_val: int = opt(500, "validation images (in domain)")
    n_test: int = opt(1000, "test images (in domain)")
    n_ood: int = opt(1000, "out-of-domain test images (dark, noisy backgrounds)")
    n_clip_ood: int = opt(2000, "out-of-domain images added to the retriever's training data only")
    alt_texts: int = opt(3, "alt-text captions drawn per image")
    clip_steps: int = opt(1500, "CLIP contrastive training steps")
    lm_steps: int = opt(800, "GPT-2 language-model steps")
    clipcap_steps: int = opt(1200, "ClipCap maximum-likelihood steps (per captioner)")


def write_split(out: Path, split: str, n: int, seed: int, alt_texts: int) -> list[dict]:
    rng = random.Random(f"{seed}-{split}")
    folder = out / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        scene = sample_scene(rng, out_of_domain=split in ("ood", "clip_ood"))
        name = f"images/{split}/{i:05d}.png"
        draw(scene).save(out / name)
        rows.append({"image": name, "captions": [descriptive_caption(scene)],
                     "alt_texts": [alt_text_caption(scene, rng) for _ in range(alt_texts)]})
    with open(out / f"{split}.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


def image_processor() -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def load_pixels(out: Path, rows: list[dict], processor: CLIPImageProcessorPil) -> torch.Tensor:
    from PIL import Image

    images = [Image.open(out / row["image"]).convert("RGB") for row in rows]
    return processor(images=images, return_tensors="pt").pixel_values


def is_built(out: Path) -> bool:
    path = out / "build.json"
    return path.is_file() and json.loads(path.read_text()).get("version") == VERSION


def train_flags(out: Path) -> list[str]:
    """The training flags that point a run at the toy world in ``out``: its manifests and models."""
    return ["--annotations", str(out / "train.jsonl"), "--val_annotations", str(out / "val.jsonl"),
            "--gpt2", str(out / "gpt2"), "--clipcap_weights", str(out / "clipcap_alttext.pt"),
            "--receiver", str(out / "clip")]


def build(options: BuildOptions) -> dict:
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    timings, start = {}, time.perf_counter()
    rows = {split: write_split(out, split, n, options.seed, options.alt_texts)
            for split, n in zip(SPLITS, (options.n_train, options.n_val, options.n_test, options.n_ood,
                                         options.n_clip_ood))}
    timings["images"] = time.perf_counter() - start
    log.info("toy world: %d images drawn (%.0f s); pretraining its CLIP, GPT-2 and two ClipCaps",
             sum(len(r) for r in rows.values()), timings["images"])

    train = rows["train"]
    corpus = [c for row in train for c in row["captions"] + row["alt_texts"]]
    gpt2_tokenizer, clip_tokenizer = pretrain.train_tokenizers(corpus, out / "gpt2", out / "clip")
    processor = image_processor()
    processor.save_pretrained(out / "clip")
    pixels = {split: load_pixels(out, rows[split], processor) for split in ("train", "val", "clip_ood")}

    start = time.perf_counter()
    clip = pretrain.train_clip(torch.cat([pixels["train"], pixels["clip_ood"]]),
                               [row["captions"][0] for row in train + rows["clip_ood"]], clip_tokenizer,
                               options.clip_steps, seed=options.seed)
    clip.save_pretrained(out / "clip")
    timings["clip"] = time.perf_counter() - start
    log.info("toy world: CLIP trained, %d steps (%.0f s)", options.clip_steps, timings["clip"])

    start = time.perf_counter()
    language_model = pretrain.train_language_model(corpus, gpt2_tokenizer, options.lm_steps, seed=options.seed)
    language_model.config.save_pretrained(out / "gpt2")
    timings["gpt2"] = time.perf_counter() - start
    log.info("toy world: GPT-2 trained, %d steps (%.0f s)", options.lm_steps, timings["gpt2"])

    retriever = ClipRetriever(clip, clip_tokenizer)
    with torch.no_grad():
        features = torch.cat([retriever.encode_images(pixels["train"][i:i + 500])
                              for i in range(0, len(train), 500)])
        val_images = retriever.encode_images(pixels["val"])
        val_texts = retriever.encode_texts([row["captions"][0] for row in rows["val"]])
    human_p_at_1 = precision_at_1(val_texts, val_images, retriever.score, min(100, len(rows["val"])))["p_at_1"]
    for style, key in (("descriptive", "captions"), ("alttext", "alt_texts")):
        start = time.perf_counter()
        sender = pretrain.train_clipcap(language_model, gpt2_tokenizer, features, [row[key] for row in train],
                                        options.clipcap_steps, seed=options.seed)
        atomic_save(sender.export(), out / f"clipcap_{style}.pt")
        timings[f"clipcap_{style}"] = time.perf_counter() - start
        log.info("toy world: %s ClipCap trained, %d steps (%.0f s)", style, options.clipcap_steps,
                 timings[f"clipcap_{style}"])

    report = {"version": VERSION, "options": asdict(options), "seconds": {k: round(v, 1) for k, v in timings.items()},
              "val_p_at_1_human_descriptive": human_p_at_1}
    (out / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m egg_zoo_discritune.toyworld.build", description=__doc__.split("\n")[0])
    add_options(parser, BuildOptions)
    cli.start(no_cuda=True)  # logging: the build reports each stage
    report = build(options_from(parser.parse_args(argv), BuildOptions))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
