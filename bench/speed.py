"""Speed and memory of one training update against the authors' own code, in the same run.

    python bench/speed.py --ref AUTHORS_EGG --peer_python PEER_VENV/bin/python --batch_sizes 20 100

For each batch size, first the authors' update (their EGG fork at de1e383, run as-is with random
full-size weights by ``bench/peer/bench_reference.py`` in its own virtual environment), then this
package's update with the same architectures (CLIP ViT-B/32 retriever; ClipCap: MLP mapper + GPT-2
small) and the paper's options (greedy training captions, dropout on, the authors' log-prob), on
pixels or on cached features, in fp32 and in the precision ``--precision auto`` picks here. Every
caption is forced to ``--max_len`` tokens on both sides (the authors' ``--max_len`` is 10 more: it
counts the prefix). Each row runs in a fresh process: the median of ``--repeats`` timed updates after
``--warmup`` untimed ones, and the peak resident memory during the timed updates (the kernel's
high-water mark, reset before each update, as the harness does). Without ``--ref`` only this package
is timed. ``--profile`` prints where this package's update spends its time, in the parts the harness times.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Optional

import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer, GPT2Config, GPT2LMHeadModel,
                          GPT2Tokenizer)

from egg_zoo_discritune.archs.clip import ClipRetriever
from egg_zoo_discritune.archs.clipcap import ClipCapSender
from egg_zoo_discritune.archs.mappers import MLPMapper
from egg_zoo_discritune.archs.packed_weights import probe_readings
from egg_zoo_discritune.captioning import encode_images, write_captions
from egg_zoo_discritune.compiled import compile_or_eager
from egg_zoo_discritune.cpu_allocator import glibc_environment
from egg_zoo_discritune.data_loaders.images import ImageRecord, ImageRecordsDataset
from egg_zoo_discritune.engine.baselines import MeanBaseline
from egg_zoo_discritune.engine.interaction import LoggingStrategy
from egg_zoo_discritune.factory import pixels_of
from egg_zoo_discritune.games.discriminative import DiscriminativeGame
from egg_zoo_discritune.games.options import GameOptions
from egg_zoo_discritune.games.retrievers import Retrievers
from egg_zoo_discritune.precision import resolve_precision
from egg_zoo_discritune.train import build_optimizer

HARNESS = Path(__file__).parent / "peer" / "bench_reference.py"
AUTHORS = "authors' code (de1e383), fp32"
AUTHORS_KEPT = "authors' code (de1e383), fp32, freed memory kept (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_)"
UPDATES = {  # name: (input, --precision, --compile)
    "this package, pixels, fp32": ("pixels", "fp32", False),
    "this package, cached features, fp32": ("cached", "fp32", False),
    "this package, cached features, fp32, --compile": ("cached", "fp32", True),
    "this package, cached features, bf16": ("cached", "bf16", False),
    "this package, cached features, auto": ("cached", "auto", False),
    "this package, cached features, auto, --compile": ("cached", "auto", True),
}
CLIP_DIM, PREFIX_LENGTH = 512, 10


def synthetic_gpt2_tokenizer(directory: Path) -> GPT2Tokenizer:
    """GPT-2's vocabulary size (bytes, 50,000 two-byte merges, EOS) where its real files are not at hand."""
    symbols = sorted(ByteLevel.alphabet())
    pairs = [(a, b) for a in symbols for b in symbols][:50_000]
    vocab = {s: i for i, s in enumerate(symbols + [a + b for a, b in pairs] + ["<|endoftext|>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in pairs) + "\n")
    return GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))


def clip_tokenizer(directory: Path, bpe: Optional[Path]) -> CLIPTokenizer:
    """CLIP's tokenizer from OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (the 49,408-token vocabulary, as
    ``clip.simple_tokenizer`` builds it), else a byte-level one (every character a token)."""
    symbols = sorted(ByteLevel.alphabet())
    merges = []
    if bpe is not None:
        merges = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")[1:49152 - 256 - 2 + 1]
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "clip_vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "clip_merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    return CLIPTokenizer(str(directory / "clip_vocab.json"), str(directory / "clip_merges.txt"))


# Layer sizes of the --tiny models (dry runs); the full-size ones are GPT-2 small's and ViT-B/32's defaults.
TINY_GPT2 = dict(n_embd=32, n_layer=2, n_head=2)
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def build_models(directory: Path, max_len: int, gpt2_tokenizer_dir: Optional[str] = None,
                 clip_bpe: Optional[str] = None, tiny: bool = False) -> tuple[ClipCapSender, ClipRetriever]:
    """Random full-size ClipCap (dropout on, as the authors' GPT-2 trains) and CLIP ViT-B/32 (``tiny``: the
    same vocabularies, two narrow layers each); every caption runs to ``max_len`` tokens: as the authors'
    harness does, the tied embedding rows of the stop tokens are zeroed, so their logits are 0 while the
    greatest of ~50K random logits is positive and greedy decoding never picks them (a logits processor
    that forbids them would cost this side work on every step that the authors' side does not do)."""
    torch.manual_seed(0)
    gpt2_tokenizer = GPT2Tokenizer.from_pretrained(gpt2_tokenizer_dir) if gpt2_tokenizer_dir \
        else synthetic_gpt2_tokenizer(directory)
    eos = gpt2_tokenizer.eos_token_id
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=len(gpt2_tokenizer), bos_token_id=eos, eos_token_id=eos,
                                     **(TINY_GPT2 if tiny else {})))
    sender = ClipCapSender(gpt, MLPMapper(CLIP_DIM, gpt.config.n_embd, PREFIX_LENGTH), gpt2_tokenizer, dropout=True)
    with torch.no_grad():
        gpt.get_input_embeddings().weight[sender.stop_ids] = 0.0
    text_tokenizer = clip_tokenizer(directory, Path(clip_bpe) if clip_bpe else None)
    n = len(text_tokenizer)
    layers = TINY_CLIP if tiny else {}
    config = CLIPConfig(text_config=dict(vocab_size=n, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1,
                                         **layers),
                        vision_config=dict(image_size=224, patch_size=32, **layers), projection_dim=CLIP_DIM)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return sender, ClipRetriever(CLIPModel(config), text_tokenizer, "scaled_cosine", "random ViT-B/32", processor)


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the resident high-water mark (VmHWM)
        f.write("5")


def peak_rss_gib() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 2**20


def build_update(name: str, args: argparse.Namespace, directory: Path):
    """The game's update as a function of the batch, its optimizer and the precision used."""
    source, requested, compiled = UPDATES[name]
    device = torch.device(args.device)
    sender, retriever = build_models(directory, args.max_len, args.gpt2_tokenizer_dir, args.clip_bpe, args.tiny)
    if compiled:
        sender.log_probs = compile_or_eager(sender.log_probs, device, "the teacher-forced pass")
    precision = resolve_precision(requested, device)
    options = GameOptions(train_decoding="greedy", max_len=args.max_len, logprob_reduction="authors")
    game = DiscriminativeGame(sender, Retrievers([retriever]), MeanBaseline(), LoggingStrategy(), options,
                              autocast_dtype=torch.bfloat16 if precision == "bf16" else None).to(device).train()
    optimizer = build_optimizer("adam", sender.trainable_parameters(), 1e-7)
    shape = (args.batch_size, CLIP_DIM) if source == "cached" else (args.batch_size, 3, 224, 224)
    inputs = torch.randn(shape, device=device)

    def update(part=nullcontext):
        with part("game forward"):
            loss, interaction = game(inputs)
        with part("backward"):
            loss.backward()
        with part("Adam step"):
            optimizer.step()
            optimizer.zero_grad()
        return interaction

    return update, game, precision


def time_update(name: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        update, _, precision = build_update(name, args, Path(tmp))
    cuda = args.device == "cuda"
    seconds, peaks, gpu_peaks, lengths = [], [], [], set()
    for i in range(args.warmup + args.repeats):
        reset_peak_rss()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        interaction = update()
        if cuda:
            torch.cuda.synchronize()
        if i == 0:
            first = time.perf_counter() - start  # with --compile: compiling included
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
            peaks.append(peak_rss_gib())
            gpu_peaks.append(torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0)
        lengths.update(interaction.message_length.tolist())
    if lengths != {args.max_len}:
        raise RuntimeError(f"this package's captions were not all {args.max_len} tokens: {sorted(lengths)}")
    median = statistics.median(seconds)
    return {"median_s": median, "per_update_s": seconds, "first_update_s": first, "peak_rss_update_gib": max(peaks),
            "peak_gpu_gib": max(gpu_peaks), "tokens_per_s": args.batch_size * args.max_len / median,
            "precision": precision, "onednn_probes": probe_readings(), "caption_tokens": sorted(lengths),
            "threads": torch.get_num_threads()}


def profile_update(name: str, args: argparse.Namespace) -> dict:
    """Where an update spends its time: the parts the authors' harness times, by wall clock around the same
    calls (median over ``--repeats`` updates after the warm-ups), then one more update under torch.profiler
    for the operators that dominate."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as tmp:
        update, game, precision = build_update(name, args, Path(tmp))
    parts = {"sender.generate": (game.sender, "generate"),
             "sender.teacher-forced log-probs (with the LM head)": (game.sender, "log_probs"),
             "receiver.encode_texts": (game.receiver.first, "encode_texts"),
             "receiver.encode_images": (game.receiver.first, "encode_images")}
    spent: dict[str, float] = {}

    @contextmanager
    def part(label: str):
        start = time.perf_counter()
        yield
        spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

    for label, (module, method) in parts.items():
        def timed(*a, _call=getattr(module, method), _label=label, **k):
            with part(_label):
                return _call(*a, **k)
        setattr(module, method, timed)
    records = []
    for i in range(args.warmup + args.repeats):
        spent.clear()
        update(part)
        if i >= args.warmup:
            records.append(dict(spent))
    labels = [*parts, "game forward", "backward", "Adam step"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        update()
    breakdown = {k: statistics.median(r.get(k, 0.0) for r in records) for k in labels}
    return {"precision": precision, "onednn_probes": probe_readings(), "breakdown_s": breakdown,
            "top_ops": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)}


def time_extraction(args: argparse.Namespace) -> dict:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        _, retriever = build_models(Path(tmp), 1)
        records = []
        for i in range(args.extract_images):  # 640x480 JPEGs, the size of a COCO image
            path = Path(tmp) / f"{i}.jpg"
            Image.effect_noise((640, 480), 64).convert("RGB").save(path, quality=90)
            records.append(ImageRecord(path, str(i)))
        dataset = ImageRecordsDataset(records, pixels_of(retriever.image_processor))
        start = time.perf_counter()
        encode_images(dataset, retriever, None, 64, torch.device("cpu"), num_workers=0)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_s": args.extract_images / seconds}


def time_captioning(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sender, _ = build_models(Path(tmp), args.max_len)
    sender.eval()
    features = torch.randn(args.caption_images, CLIP_DIM)
    write_captions(sender, features[:20], "beam", 5, args.max_len, 20)  # warm-up
    start = time.perf_counter()
    write_captions(sender, features, "beam", 5, args.max_len, 20)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "captions_per_s": args.caption_images / seconds}


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.worker == "extract":
        result = time_extraction(args)
    elif args.worker == "caption":
        result = time_captioning(args)
    elif args.profile:
        result = profile_update(args.worker, args)
    else:
        result = time_update(args.worker, args)
    print("RESULT " + json.dumps(result))


def run_result(command: list[str], what: str, env: Optional[dict] = None) -> dict:
    """The JSON after the last ``RESULT`` line of a benchmark process."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-1500:]}\n{done.stderr[-2500:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"{what}: {json.dumps({k: v for k, v in result.items() if k not in ('updates', 'top_ops')})}",
          file=sys.stderr, flush=True)
    return result


def measure(args: argparse.Namespace, name: str, batch_size: int, profile: bool = False) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--batch_size", str(batch_size), "--max_len",
               str(args.max_len), "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--threads",
               str(args.threads), "--extract_images", str(args.extract_images), "--caption_images",
               str(args.caption_images), "--device", args.device] + (["--tiny"] if args.tiny else [])
    command += ["--gpt2_tokenizer_dir", args.gpt2_tokenizer_dir] if args.gpt2_tokenizer_dir else []
    command += ["--clip_bpe", args.clip_bpe] if args.clip_bpe else []
    return run_result(command + (["--profile"] if profile else []), f"{name}, batch {batch_size}")


def measure_authors(args: argparse.Namespace, batch_size: int, keep_freed_memory: bool = False) -> dict:
    """The harness as the authors ran: glibc's default malloc (their process does not import this package),
    unless ``keep_freed_memory`` (the setting this package makes, through glibc's environment variables)."""
    command = [args.peer_python, str(HARNESS), "--ref", args.ref, "-b", str(batch_size), "-n", str(args.repeats),
               "--warmup", str(args.warmup), "--anomaly", "off", "--threads", str(args.threads), "--max-len",
               str(args.max_len + PREFIX_LENGTH), "--gpt2-tokenizer-dir", args.gpt2_tokenizer_dir]
    env = {**os.environ, **(glibc_environment() if keep_freed_memory else {})}
    result = run_result(command, f"{AUTHORS_KEPT if keep_freed_memory else AUTHORS}, batch {batch_size}", env)
    if result["max_caption_tokens"] != args.max_len or result["rows_stopped_early"]:
        raise RuntimeError(f"the authors' captions were not all {args.max_len} tokens: {result['caption_tokens']}")
    return result


def peer_clip_bpe(peer_python: str) -> Optional[str]:
    """OpenAI's CLIP BPE file of the CLIP package installed beside the authors' code."""
    code = ("import importlib.util, pathlib; s = importlib.util.find_spec('clip'); "
            "print(pathlib.Path(list(s.submodule_search_locations)[0]) / 'bpe_simple_vocab_16e6.txt.gz')")
    path = subprocess.run([peer_python, "-c", code], capture_output=True, text=True).stdout.strip()
    return path if path and Path(path).is_file() else None


def lscpu() -> dict:
    fields = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                  .stdout.splitlines() if ":" in line)
    # family and model too: a hypervisor may show different CPUs under one model name ("AMD EPYC")
    return {k: fields.get(k, "").strip() for k in ("Model name", "CPU family", "Model", "CPU(s)", "Flags")}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", help="the authors' EGG fork at de1e383 (git clone https://github.com/manugaurdl/EGG; "
                                      "git checkout de1e383); without it only this package is timed")
    parser.add_argument("--peer_python", help="python of the environment bench/peer/README.md sets up for the authors' "
                                              "code (their transformers, OpenAI's clip package, whisper's GPT-2 BPE)")
    parser.add_argument("--gpt2_tokenizer_dir", help="GPT-2's vocab.json/merges.txt (default with --ref: built by the "
                                                     "harness in a temporary directory; else a synthetic vocabulary)")
    parser.add_argument("--clip_bpe", help="OpenAI's bpe_simple_vocab_16e6.txt.gz (default with --ref: the peer "
                                           "environment's; else a byte-level CLIP tokenizer)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[20, 100], help="images per update")
    parser.add_argument("--updates", nargs="+", default=list(UPDATES), choices=list(UPDATES),
                        help="this package's updates to time")
    parser.add_argument("--max_len", type=int, default=30, help="caption tokens, forced on both sides (the authors' "
                                                                "code allows 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates first (the harness: >= 3 at batch 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed updates; the median is reported")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where this package's update runs (the authors' code takes CUDA when present)")
    parser.add_argument("--authors_keep_freed_memory", action="store_true",
                        help="also time the authors' code with the malloc setting this package makes (freed memory "
                             "kept for reuse; egg_zoo_discritune/cpu_allocator.py), as a row of its own; ratios stay "
                             "against their code as run")
    parser.add_argument("--tiny", action="store_true", help="two narrow layers per model instead of the full sizes "
                                                            "(a dry run of the script, not a measurement)")
    parser.add_argument("--profile", action="store_true", help="also time the parts of this package's updates (and "
                                                               "profile one with torch.profiler, in the JSON)")
    parser.add_argument("--extract_images", type=int, default=0, help="also time feature extraction on this many "
                                                                      "640x480 JPEGs (0: skip)")
    parser.add_argument("--caption_images", type=int, default=0, help="also time beam-5 captioning of this many "
                                                                      "images (0: skip)")
    parser.add_argument("--out", default="bench/results/speed.json", help="where the raw numbers are written")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.ref and not args.peer_python:
        parser.error("--ref needs --peer_python (bench/peer/README.md)")
    tokenizer_dir = None
    if args.ref:
        tokenizer_dir = tempfile.TemporaryDirectory()
        args.gpt2_tokenizer_dir = args.gpt2_tokenizer_dir or tokenizer_dir.name
        args.clip_bpe = args.clip_bpe or peer_clip_bpe(args.peer_python)

    results = {"cpu": lscpu(), "threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
               "max_len": args.max_len, "warmup": args.warmup, "repeats": args.repeats, "batches": {}}
    rows = ["| update | batch | median s/update (min-max) | x vs the authors' code | peak RSS (GiB) | first update s |",
            "|---|---|---|---|---|---|"]
    for batch_size in args.batch_sizes:
        timings = {AUTHORS: measure_authors(args, batch_size)} if args.ref else {}
        if args.ref and args.authors_keep_freed_memory:
            timings[AUTHORS_KEPT] = measure_authors(args, batch_size, keep_freed_memory=True)
        timings.update({name: measure(args, name, batch_size) for name in args.updates})
        results["batches"][str(batch_size)] = timings
        authors = timings.get(AUTHORS, {}).get("median_s")
        for name, t in timings.items():
            label = name.replace("auto", f"auto ({t['precision']})") if "auto" in name else name
            ratio = f"{authors / t['median_s']:.2f}" if authors else "-"
            spread = f"{min(t['per_update_s']):.2f}-{max(t['per_update_s']):.2f}"
            first = f"{t['first_update_s']:.1f}" if "first_update_s" in t else "-"
            rows.append(f"| {label} | {batch_size} | {t['median_s']:.2f} ({spread}) | {ratio} | "
                        f"{t['peak_rss_update_gib']:.2f} | {first} |")
        if args.profile:
            results["batches"][str(batch_size)]["profiles"] = profiles = {
                name: measure(args, name, batch_size, profile=True) for name in args.updates}
            for name, p in profiles.items():
                rows.append(f"\nwhere an update of {name} ({p['precision']}) spends its time, batch {batch_size} "
                            f"(median s; parts nest in the game forward):")
                rows += [f"  {part:40s} {s:8.3f}" for part, s in p["breakdown_s"].items()]
    if args.extract_images:
        results["extraction"] = e = measure(args, "extract", 64)
        rows.append(f"\nfeature extraction (640x480 JPEGs -> ViT-B/32, batch 64): {e['images_per_s']:.1f} images/s")
    if args.caption_images:
        results["captioning"] = c = measure(args, "caption", 20)
        rows.append(f"evaluation captioning (beam 5, {args.max_len} tokens, batch 20): "
                    f"{c['captions_per_s']:.2f} captions/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['cpu']['Model name']}, {args.threads} threads, torch {torch.__version__}; "
          f"{args.max_len} caption tokens on both sides")
    print("\n".join(rows))
    if tokenizer_dir is not None:
        tokenizer_dir.cleanup()


if __name__ == "__main__":
    main()
