"""Evaluation across domains: ``python -m egg_zoo_discritune.evaluate --help``.

For each checkpoint and each test set: captions (beam search by default), P@1 over consecutive blocks
of 100 images, recall@1/5 over the whole set, and BLEU-4/METEOR/ROUGE-L/CIDEr(/SPICE); with
``--distractors nearest`` or ``--candidate_sets``, also P@1 among hard distractors. Writes
``results.json``, ``results.csv``, ``results.md`` (the paper's table layouts) and the captions per image
(``captions/<model>__<set>.jsonl``) into ``--output_dir``. Runs under ``torchrun`` too: images and
captions are sharded over the processes, and the results are the same as in one process.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

import torch

from egg_zoo_discritune.cli import run as run_cli, start
from egg_zoo_discritune.captioning import (EncodedImages, caption_images, encode_images, encode_texts,
                                           write_captions)
from egg_zoo_discritune.archs.options import ReceiverOptions, SenderOptions
from egg_zoo_discritune.config import DecodingOptions, add_options, options_from
from egg_zoo_discritune.options import opt
from egg_zoo_discritune.data_loaders.eval_sets import EVAL_SETS, PAPER_SETS, parse_eval_set
from egg_zoo_discritune.data_loaders.features import FeatureCache, fingerprint
from egg_zoo_discritune.data_loaders.images import ImageRecordsDataset
from egg_zoo_discritune.engine.distributed import DistributedContext, local_device, process_group
from egg_zoo_discritune.factory import (PRETRAINED, load_clips, load_other_receivers, load_sender_from, pixels_of,
                                        receiver_names)
from egg_zoo_discritune.gallery import Captions, Section, write_gallery
from egg_zoo_discritune.metrics.hard_distractors import (nearest_sets, p_at_1_of_choices, read_sets, retrieved_in_sets,
                                                         write_sets)
from egg_zoo_discritune.metrics.nlg import caption_metrics
from egg_zoo_discritune.metrics.retrieval import block_ranks, p_at_1_of_ranks, recall_at_k
from egg_zoo_discritune.report import HUMAN, markdown_tables, write_csv

log = logging.getLogger("discritune")


@dataclass
class EvalOptions:
    """What to evaluate, on what, and where the results go."""

    checkpoints: list[str] = opt([PRETRAINED], "models: 'pretrained' (--clipcap_weights as released), run directories, "
                                               "training checkpoints (.tar) or ClipCap files (.pt)")
    labels: list[str] = opt([], "names of the checkpoints in the tables, in the same order (default: from their paths)")
    test_sets: list[str] = opt(list(PAPER_SETS), f"test sets NAME or NAME:SPLIT; names: {', '.join(EVAL_SETS)}")
    data_dir: str = opt("data", "folder holding one sub-folder per dataset (coco/, flickr30k/, conceptual/, "
                                "nocaps/, concadia/)")
    root: list[str] = opt([], "where one dataset lives instead, as NAME=PATH (e.g. concadia=/data/concadia)")
    block_size: int = opt(100, "candidates per P@1 block (the paper: 100)")
    distractors: str = opt("blocks", "P@1's distractors: blocks (the other images of each block, the paper's Table 1) "
                                     "or nearest (also P@1 among each target and its --k nearest test images by "
                                     "cosine of the retriever's image features, the paper's App. D; the sets are "
                                     "written to <output_dir>/candidate_sets/<set>.jsonl)", ("blocks", "nearest"))
    k: int = opt(9, "--distractors nearest: hard distractors per target (the paper's human study: 9)")
    candidate_sets: list[str] = opt([], "[NAME=]FILE: also P@1 among your own candidate sets for test set NAME "
                                        "(JSON lines {\"target\": ID, \"candidates\": [ID, ...]} of image ids, "
                                        "e.g. adjacent video frames, or the sets --distractors nearest wrote)")
    limit: int = opt(0, "evaluate only the first N images of each set, for a quick look (0: all)")
    human: bool = opt(True, "also score the first human reference per image (the paper's 'Human captions' row)")
    nlg: bool = opt(True, "compute BLEU/METEOR/ROUGE-L/CIDEr/SPICE (needs Java)")
    spice_jars: Optional[str] = opt(None, "folder with the Stanford CoreNLP 3.6.0 jars SPICE needs")
    feature_cache: list[str] = opt([], "NAME=DIR: read test set NAME's image features from this cache (made by "
                                       "extract_features --test_set NAME) instead of its images")
    gallery: int = opt(100, "gallery.html shows the first N images of each test set with every checkpoint's "
                            "caption and the retriever's verdict, filterable (0: no gallery)")
    verify_cache: int = opt(1000, "--feature_cache: hash this many of the test images (a seeded sample; -1: all, "
                                  "0: none) and refuse the cache if one differs from the image it was made from")
    output_dir: str = opt("eval", "where results and captions are written")

    def __post_init__(self) -> None:
        if self.block_size < 2:
            raise ValueError(f"--block_size {self.block_size}: a P@1 block needs the target and at least one "
                             "distractor (the paper: 100)")
        if self.k < 1:
            raise ValueError(f"--k {self.k}: a candidate set needs the target and at least one distractor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m egg_zoo_discritune.evaluate", description=__doc__.split("\n")[0])
    for cls in (EvalOptions, DecodingOptions, SenderOptions, ReceiverOptions):
        add_options(parser, cls)
    return parser


def versions() -> dict:
    names = ("egg-zoo-discritune", "torch", "transformers", "pycocoevalcap")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return {"python": platform.python_version(), **found}


def _model_name(spec: str) -> str:
    if spec == PRETRAINED:
        return "ClipCap (pretrained)"
    path = Path(spec)
    if path.is_dir() or not path.parent.name:
        return path.name
    return f"{path.parent.name}/{path.name}"


def _score(texts_features, encoded, retriever, opts, sets: Optional[torch.Tensor] = None
           ) -> tuple[dict, torch.Tensor, Optional[list[int]]]:
    """The metrics, each caption's rank of its image among its block, and with ``sets`` the image each
    caption retrieved among its set (-1 for an image that is no set's target)."""
    ranks = block_ranks(texts_features, encoded.features, retriever.score, opts.block_size)
    scores = p_at_1_of_ranks(ranks, opts.block_size)
    picked = None
    if sets is not None:
        chosen = retrieved_in_sets(texts_features, encoded.features, retriever.score, sets)
        scores.update(p_at_1_of_choices(chosen, sets))
        picked = [-1] * texts_features.size(0)
        for target, image in zip(sets[:, 0].tolist(), chosen.tolist()):
            picked[target] = image
    return {**scores, **recall_at_k(texts_features, encoded.features, retriever.score)}, ranks, picked


def _named_paths(flag: str, specs: list[str], sole_test_set: Optional[str] = None) -> dict[str, Path]:
    """``NAME=PATH`` values of ``flag``; with ``sole_test_set``, a bare PATH names it."""
    paths = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep and sole_test_set:
            name, path = sole_test_set, spec
        elif not name or not path:
            raise ValueError(f"{flag} {spec!r}: expected NAME=PATH, NAME a test set (e.g. coco)")
        paths[name] = Path(path)
    return paths


def _hard_sets(opts: EvalOptions, spec: str, name: str, given: dict[str, Path], image_ids: list,
               features: torch.Tensor, out_dir: Path) -> tuple[Optional[torch.Tensor], Optional[str]]:
    """The candidate sets of test set ``spec`` and how they were made, or (None, None) without any."""
    path = given.get(spec) or given.get(name)
    if path is not None:
        return read_sets(path, image_ids), f"the sets of {path.name}"
    if opts.distractors != "nearest":
        return None, None
    sets = nearest_sets(features, opts.k)
    write_sets(out_dir / "candidate_sets" / f"{spec.replace(':', '_')}.jsonl", sets, image_ids)
    return sets, f"{opts.k} nearest"


def _cached_images(directory: Path, eval_set, records, spec: str, retriever, sender_encoder, verify: int):
    """The test set's dataset and encoded images read from a feature cache made for it."""
    if sender_encoder is not None:
        raise ValueError(f"--feature_cache {eval_set.name}: the cache holds the retriever's features, and a "
                         "captioner with its own --sender_clip needs the images")
    cache = FeatureCache(directory, fingerprint(retriever))
    if cache.manifest.get("source") != eval_set.folder:
        raise ValueError(f"{directory}: a feature cache of {cache.manifest.get('source')!r} images, not of "
                         f"{eval_set.folder!r} (make it with extract_features --test_set {eval_set.name})")
    cache.verify(records, verify)
    dataset = cache.dataset(records, spec)
    features = dataset.features()
    return dataset, EncodedImages(torch.arange(len(dataset)), features, features)


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    """Evaluates every checkpoint on every test set; returns the result rows (on rank 0 under torchrun,
    where every process encodes and captions a shard of each set and rank 0 scores and writes)."""
    namespace = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    opts, decode = options_from(namespace, EvalOptions), options_from(namespace, DecodingOptions)
    sender_opts = options_from(namespace, SenderOptions)
    receiver_opts = options_from(namespace, ReceiverOptions)
    device = start(decode.no_cuda)
    with process_group(device.type == "cuda") as context:
        return _evaluate(opts, decode, sender_opts, receiver_opts, local_device(device, context), context)


def _evaluate(opts: EvalOptions, decode: DecodingOptions, sender_opts: SenderOptions, receiver_opts: ReceiverOptions,
              device: torch.device, context: DistributedContext) -> list[dict]:
    if not context.is_leader:
        logging.getLogger().setLevel(logging.WARNING)
    caches = _named_paths("--feature_cache", opts.feature_cache)
    given_sets = _named_paths("--candidate_sets", opts.candidate_sets,
                              opts.test_sets[0] if len(opts.test_sets) == 1 else None)
    out_dir = Path(opts.output_dir)
    if context.is_leader:
        (out_dir / "captions").mkdir(parents=True, exist_ok=True)

    retriever, sender_encoder, preprocess = load_clips(receiver_opts, sender_opts.sender_clip)
    retriever.to(device)
    if sender_encoder is not None:
        sender_encoder.to(device)
    # Retrievers after the first (--receiver a,b,c): P@1 with each, e.g. one held out of training.
    others = dict(zip(receiver_names(receiver_opts)[1:],
                      (r.to(device) for r in load_other_receivers(receiver_opts, retriever))))
    datasets, encoded, encoded_by_other = {}, {}, {}
    for spec in opts.test_sets:
        eval_set, split = parse_eval_set(spec)
        records = eval_set.read(eval_set.root(opts.root, opts.data_dir), split)
        records = records[:opts.limit] if opts.limit else records
        cache = caches.get(spec) or caches.get(eval_set.name)
        if cache is not None:
            dataset, encoded[spec] = _cached_images(cache, eval_set, records, spec, retriever, sender_encoder,
                                                    opts.verify_cache)
        else:
            dataset = ImageRecordsDataset(records, preprocess, source=spec)
            encoded[spec] = encode_images(dataset, retriever, sender_encoder, decode.batch_size, device,
                                          decode.num_workers, spec, context).gather()
        datasets[spec] = (eval_set, split, dataset)
        if others and cache is not None:
            raise ValueError(f"--feature_cache {spec}: several retrievers (--receiver) need the images")
        encoded_by_other[spec] = {
            name: encode_images(dataset, other, None, decode.batch_size, device, decode.num_workers, spec,
                                context).gather() for name, other in others.items()}
    hard = {spec: (None, None) for spec in datasets}
    if context.is_leader:
        for spec, (eval_set, _, dataset) in datasets.items():
            ids = [dataset.records[i].image_id for i in encoded[spec].indices.tolist()]
            hard[spec] = _hard_sets(opts, spec, eval_set.name, given_sets, ids, encoded[spec].features, out_dir)
    common = {"decoding": decode.decoding, "beam_size": decode.beam_size if decode.decoding == "beam" else 1,
              "max_len": decode.max_len, "block_size": opts.block_size, "retriever": receiver_opts.receiver,
              "similarity": receiver_opts.similarity, "stop_rule": sender_opts.stop_rule, "versions": versions()}

    def row(model: str, spec: str, metrics: dict, extra: dict) -> dict:
        eval_set, split, dataset = datasets[spec]
        title = eval_set.title if split == eval_set.split else f"{eval_set.title} ({split})"
        kind = {"hard_distractors": hard[spec][1]} if hard[spec][1] else {}
        return {"model": model, "test_set": spec, "title": title, "split": split,
                "n_images": len(encoded[spec].indices), "n_skipped": dataset.n_skipped, **metrics, **kind, **extra,
                **common}

    if opts.labels and len(opts.labels) != len(opts.checkpoints):
        raise ValueError(f"{len(opts.labels)} --labels for {len(opts.checkpoints)} --checkpoints")
    results, shown = [], {spec: [] for spec in datasets}
    for k, checkpoint in enumerate(opts.checkpoints):
        sender, info = load_sender_from(checkpoint, sender_opts, (sender_encoder or retriever).feature_dim)
        sender.to(device).eval()
        name = opts.labels[k] if opts.labels else _model_name(checkpoint)
        for spec, (_, _, dataset) in datasets.items():
            images = encoded[spec]
            records = [dataset.records[i] for i in images.indices.tolist()]
            if sender.reads_pixels:
                captions = caption_images(sender, ImageRecordsDataset(records, pixels_of(sender.image_processor),
                                                                      source=spec), decode.decoding,
                                          decode.beam_size, decode.max_len, decode.batch_size, f"{name} {spec}", context)
            else:
                captions = write_captions(sender, images.prefix_features, decode.decoding, decode.beam_size,
                                          decode.max_len, decode.batch_size, f"{name} {spec}", context)
            if not context.is_leader:
                continue
            metrics, ranks, picked = _score(encode_texts(retriever, captions), images, retriever, opts, hard[spec][0])
            shown[spec].append(Captions(name, captions, ranks.tolist(), picked))
            for other_name, other in others.items():
                scores = _score(encode_texts(other, captions), encoded_by_other[spec][other_name], other, opts)[0]
                metrics[f"p_at_1 [{other_name}]"] = scores["p_at_1"]
            if opts.nlg:
                metrics.update(caption_metrics({str(k): r.captions for k, r in enumerate(records)},
                                               {str(k): c for k, c in enumerate(captions)}, opts.spice_jars))
            with open(out_dir / "captions" / f"{name.replace('/', '_')}__{spec.replace(':', '_')}.jsonl", "w") as f:
                for record, caption in zip(records, captions):
                    f.write(json.dumps({"image_id": record.image_id, "path": str(record.path), "caption": caption,
                                        "references": record.captions}) + "\n")
            results.append(row(name, spec, metrics, info))
            log.info("%s on %s: P@1 %.3f", name, spec, metrics["p_at_1"])
    if not context.is_leader:
        return results
    if opts.human:
        for spec, (_, _, dataset) in datasets.items():
            firsts = [(dataset.records[i].captions or [""])[0] for i in encoded[spec].indices.tolist()]
            scores = _score(encode_texts(retriever, firsts), encoded[spec], retriever, opts, hard[spec][0])[0]
            results.append(row(HUMAN, spec, scores, {"checkpoint": None}))
    if opts.gallery:
        def rule(spec: str) -> str:
            among = hard[spec][1] or f"its block of {opts.block_size}"
            return f"a caption is right when the retriever picks its image among {among}"

        sections = [Section(next(r["title"] for r in results if r["test_set"] == spec),
                            [dataset.records[i] for i in encoded[spec].indices.tolist()], shown[spec], opts.block_size,
                            min(opts.gallery, len(encoded[spec].indices)), rule(spec))
                    for spec, (_, _, dataset) in datasets.items()]
        log.info("gallery: %s", write_gallery(out_dir / "gallery.html", sections))

    options = {**asdict(opts), **asdict(decode)}
    (out_dir / "results.json").write_text(json.dumps({"options": options, "results": results}, indent=2) + "\n")
    write_csv(results, out_dir / "results.csv")
    table = markdown_tables(results)
    (out_dir / "results.md").write_text(table)
    print(table)
    return results


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
