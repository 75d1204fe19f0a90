"""Speed and memory of one training update with the full-size architectures (random weights):
CLIP ViT-B/32 retriever + ClipCap (MLP mapper, GPT-2 small), captions forced to ``--max_len`` tokens.

    python bench/speed.py --batch_sizes 20 --repeats 5

Compares, in the same run, this package's update on cached features or on pixels, in fp32 or bf16,
with a "naive" update that does what the authors' code does per update (DESIGN §5, paper-code-facts
§7): the image tower twice (sender prefix and receiver), GPT-2 generation with a per-row Python stop
check at every step, the teacher-forced pass, and a frozen GPT-2 forward for the KL term even at
coefficient 0. Also times feature extraction (images/s) and evaluation captioning (captions/s, beam 5).

Every measurement runs in a fresh process (so peak memory is its own): the median of ``--repeats``
timed repetitions after ``--warmup`` untimed ones. Pixels are random tensors: JPEG decoding, which
the cache also removes, is not counted, so the cached/pixels ratio is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer, GPT2Config, GPT2LMHeadModel,
                          GPT2Tokenizer, LogitsProcessor, LogitsProcessorList)

from egg_zoo_discritune.archs.clip import ClipRetriever
from egg_zoo_discritune.archs.clipcap import ClipCapSender
from egg_zoo_discritune.archs.mappers import MLPMapper
from egg_zoo_discritune.captioning import encode_images, write_captions
from egg_zoo_discritune.data_loaders.images import ImageRecord, ImageRecordsDataset
from egg_zoo_discritune.engine.baselines import MeanBaseline
from egg_zoo_discritune.engine.interaction import LoggingStrategy
from egg_zoo_discritune.factory import pixels_of
from egg_zoo_discritune.games.discriminative import DiscriminativeGame
from egg_zoo_discritune.games.options import GameOptions
from egg_zoo_discritune.games.retrievers import Retrievers
from egg_zoo_discritune.games.rewards import REWARDS
from egg_zoo_discritune.train import build_optimizer

UPDATES = {  # name: (input, precision)
    "naive fp32 (authors' per-update work)": ("naive", "fp32"),
    "pixels fp32": ("pixels", "fp32"),
    "pixels bf16": ("pixels", "bf16"),
    "cached fp32": ("cached", "fp32"),
    "cached bf16": ("cached", "bf16"),
}
NAIVE = "naive fp32 (authors' per-update work)"
CLIP_DIM, PREFIX_LENGTH = 512, 10


def write_tokenizers(directory: Path) -> tuple[GPT2Tokenizer, CLIPTokenizer]:
    """A GPT-2 tokenizer with GPT-2's vocabulary size (bytes, 50,000 two-byte merges, EOS) and a byte-level
    CLIP tokenizer: no real vocabulary can be downloaded here, and the cost depends on sizes only."""
    symbols = sorted(ByteLevel.alphabet())  # GPT-2's 256 byte stand-ins
    pairs = [(a, b) for a in symbols for b in symbols][:50_000]
    vocab = {s: i for i, s in enumerate(symbols + [a + b for a, b in pairs] + ["<|endoftext|>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in pairs) + "\n")
    gpt2 = GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    clip_vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "clip_vocab.json").write_text(json.dumps({t: i for i, t in enumerate(clip_vocab)}))
    (directory / "clip_merges.txt").write_text("#version: 0.2\n")
    clip = CLIPTokenizer(str(directory / "clip_vocab.json"), str(directory / "clip_merges.txt"))
    return gpt2, clip


def build_models(directory: Path, max_len: int) -> tuple[ClipCapSender, ClipRetriever]:
    torch.manual_seed(0)
    gpt2_tokenizer, clip_tokenizer = write_tokenizers(directory)
    eos = gpt2_tokenizer.eos_token_id
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=len(gpt2_tokenizer), bos_token_id=eos, eos_token_id=eos))
    gpt.generation_config.min_new_tokens = max_len  # every caption has the maximum length
    sender = ClipCapSender(gpt, MLPMapper(CLIP_DIM, gpt.config.n_embd, PREFIX_LENGTH), gpt2_tokenizer)
    n = len(clip_tokenizer)
    config = CLIPConfig(text_config=dict(bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1),
                        vision_config=dict(image_size=224, patch_size=32), projection_dim=CLIP_DIM)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return sender, ClipRetriever(CLIPModel(config), clip_tokenizer, "dot", "random ViT-B/32", processor)


class PerRowStopCheck(LogitsProcessor):
    """The authors' stop processor: a Python loop over rows with a host sync per row at every step;
    a row that has emitted a stop token is forced to pad."""

    def __init__(self, stop_ids: list[int], pad_id: int):
        self.stop_ids, self.pad_id = set(stop_ids), pad_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for row in range(input_ids.size(0)):
            if self.stop_ids & set(input_ids[row].tolist()):
                scores[row] = float("-inf")
                scores[row, self.pad_id] = 0.0
        return scores


def naive_update(sender: ClipCapSender, sender_clip: ClipRetriever, retriever: ClipRetriever, reference: ClipCapSender,
                 baseline: MeanBaseline, pixels: torch.Tensor, max_len: int) -> torch.Tensor:
    prefix_features = sender_clip.encode_images(pixels)  # image tower, pass 1 (the sender's CLIP)
    with torch.no_grad():
        prefix = sender.prefix(prefix_features)
        tokens = sender.gpt.generate(
            inputs_embeds=prefix, attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long),
            max_new_tokens=max_len, do_sample=False, pad_token_id=sender.pad_id, eos_token_id=sender.stop_ids,
            logits_processor=LogitsProcessorList([PerRowStopCheck(sender.stop_ids, sender.pad_id)]))
    lengths = torch.full((tokens.size(0),), tokens.size(1))
    token_logp, _ = sender.log_probs(prefix_features, tokens, lengths)
    with torch.no_grad():
        reference.log_probs(prefix_features, tokens, lengths)  # the frozen KL model, run even at coefficient 0
        texts = retriever.encode_texts(sender.decode(tokens, lengths))
        images = retriever.encode_images(pixels)  # image tower, pass 2 (the receiver)
        reward = REWARDS["discriminative"](retriever.score(texts, images), torch.arange(images.size(0)))
    loss = -((reward - baseline.predict(reward)) * token_logp.sum(1)).mean()
    baseline.update(reward)
    return loss


def time_update(name: str, batch_size: int, max_len: int, warmup: int, repeats: int) -> dict:
    source, precision = UPDATES[name]
    with tempfile.TemporaryDirectory() as tmp:
        sender, retriever = build_models(Path(tmp), max_len)
    if source == "naive":
        optimizer = torch.optim.Adam(sender.trainable_parameters(), lr=1e-7)  # the authors' (unfused) Adam
        import copy
        sender_clip, reference = copy.deepcopy(retriever), copy.deepcopy(sender).requires_grad_(False)
        baseline = MeanBaseline()
        step = lambda x: naive_update(sender, sender_clip, retriever, reference, baseline, x, max_len)  # noqa: E731
    else:
        optimizer = build_optimizer("adam", sender.trainable_parameters(), 1e-7)
        game = DiscriminativeGame(sender, Retrievers([retriever]), MeanBaseline(), LoggingStrategy(),
                                  GameOptions(train_decoding="greedy", max_len=max_len),
                                  autocast_dtype=torch.bfloat16 if precision == "bf16" else None)
        step = lambda x: game(x)[0]  # noqa: E731
    inputs = torch.randn(batch_size, CLIP_DIM) if source == "cached" else torch.randn(batch_size, 3, 224, 224)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        loss = step(inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "all_seconds": times}


def time_extraction(batch_size: int, n_images: int) -> dict:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        _, retriever = build_models(Path(tmp), 1)
        records = []
        for i in range(n_images):  # 640x480 JPEGs, the size of a COCO image
            path = Path(tmp) / f"{i}.jpg"
            Image.effect_noise((640, 480), 64).convert("RGB").save(path, quality=90)
            records.append(ImageRecord(path, str(i)))
        dataset = ImageRecordsDataset(records, pixels_of(retriever.image_processor))
        start = time.perf_counter()
        encode_images(dataset, retriever, None, batch_size, torch.device("cpu"), num_workers=0)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_s": n_images / seconds}


def time_captioning(batch_size: int, max_len: int, n_images: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sender, _ = build_models(Path(tmp), max_len)
    sender.eval()
    features = torch.randn(n_images, CLIP_DIM)
    write_captions(sender, features[:batch_size], "beam", 5, max_len, batch_size)  # warm-up
    start = time.perf_counter()
    write_captions(sender, features, "beam", 5, max_len, batch_size)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "captions_per_s": n_images / seconds}


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.worker == "extract":
        result = time_extraction(args.batch_size, args.n_images)
    elif args.worker == "caption":
        result = time_captioning(args.batch_size, args.max_len, args.n_images)
    else:
        result = time_update(args.worker, args.batch_size, args.max_len, args.warmup, args.repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(args: argparse.Namespace, name: str, batch_size: int, n_images: int = 0) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--batch_size", str(batch_size), "--max_len",
               str(args.max_len), "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--n_images",
               str(n_images), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} at batch {batch_size} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name}, batch {batch_size}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[20], help="images per update (the paper: 100)")
    parser.add_argument("--updates", nargs="+", default=list(UPDATES), choices=list(UPDATES), help="updates to time")
    parser.add_argument("--max_len", type=int, default=40, help="caption tokens, forced (40 as the paper's text; the authors' code allows 30)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates first")
    parser.add_argument("--repeats", type=int, default=5, help="timed updates; the median is reported")
    parser.add_argument("--extract_images", type=int, default=128, help="JPEGs encoded for the extraction rate (0: skip)")
    parser.add_argument("--caption_images", type=int, default=40, help="images captioned with beam 5 (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="bench/results/speed.json", help="where the raw numbers are written")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--n_images", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    results = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                          f"torch {torch.__version__}", "max_len": args.max_len, "repeats": args.repeats, "updates": {}}
    rows = ["| update | batch | median s/update | x vs naive fp32 | peak RSS (GB) |", "|---|---|---|---|---|"]
    for batch_size in args.batch_sizes:
        timings = {name: measure(args, name, batch_size) for name in args.updates}
        results["updates"][str(batch_size)] = timings
        naive = timings.get(NAIVE, {}).get("seconds")
        for name, t in timings.items():
            ratio = f"{naive / t['seconds']:.2f}" if naive else "-"
            rows.append(f"| {name} | {batch_size} | {t['seconds']:.2f} | {ratio} | {t['peak_rss_mb'] / 1024:.1f} |")
    if args.extract_images:
        results["extraction"] = measure(args, "extract", 64, args.extract_images)
        rows.append(f"\nfeature extraction (JPEG 640x480 -> ViT-B/32, batch 64): "
                    f"{results['extraction']['images_per_s']:.1f} images/s")
    if args.caption_images:
        results["captioning"] = measure(args, "caption", 20, args.caption_images)
        rows.append(f"evaluation captioning (beam 5, {args.max_len} tokens, batch 20): "
                    f"{results['captioning']['captions_per_s']:.2f} captions/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
