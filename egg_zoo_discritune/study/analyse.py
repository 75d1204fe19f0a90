"""``discritune-study analyse``: the paper's Table 6 from a study file.

- Participants who fail more than ``--max_attention_failures`` attention checks are excluded (reported).
- Accuracy per caption source over the remaining answers, with a 95 % confidence interval from a crossed
  bootstrap: each replicate resamples participants and targets with replacement and weighs every answer
  by the product of its participant's and its target's counts.
- Paired comparisons: for two sources, the targets answered under both; McNemar's exact test on the
  targets where exactly one of them led to the right picture.
- Median response times, and ``only_<source>.html``: the trials where only that source's caption led to
  the target (the gallery page, with the picture each participant chose).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Optional

import numpy as np

from egg_zoo_discritune.data_loaders.images import ImageRecord
from egg_zoo_discritune.gallery import Captions, Section, write_gallery
from egg_zoo_discritune.options import opt
from egg_zoo_discritune.study.store import connect, meta


@dataclass
class AnalyseOptions:
    """How answers are filtered and summarised."""

    max_attention_failures: int = opt(1, "exclude a participant who fails more attention checks than this")
    bootstrap: int = opt(2000, "bootstrap replicates of the confidence intervals")
    seed: int = opt(0, "seed of the bootstrap")
    only: Optional[str] = opt(None, "the source of the 'only this caption led to the target' page (default: the "
                                    "first caption source)")
    output_dir: Optional[str] = opt(None, "where table6.md, table6.json and the page go (default: beside the study)")


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact p-value of McNemar's test: under the null, each discordant target is a fair coin."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def crossed_bootstrap(participants: np.ndarray, items: np.ndarray, correct: np.ndarray, replicates: int,
                      rng: np.random.Generator) -> tuple[float, float]:
    """95 % interval of the mean of ``correct`` resampling participants and items (codes 0..n-1) together."""
    n_p, n_i = participants.max() + 1, items.max() + 1
    values = []
    for _ in range(replicates):
        weight = rng.multinomial(n_p, np.full(n_p, 1 / n_p))[participants] * \
            rng.multinomial(n_i, np.full(n_i, 1 / n_i))[items]
        if weight.sum():
            values.append(float((weight * correct).sum() / weight.sum()))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def load_answers(db) -> list[dict]:
    rows = db.execute(
        "SELECT answers.slot, trials.source, trials.attention, trials.target_image, answers.correct, "
        "answers.response_ms, answers.chosen_position, trials.candidates, trials.caption, trials.id "
        "FROM answers JOIN assignments USING (slot, position) JOIN trials ON trials.id = assignments.trial "
        "ORDER BY answers.slot, answers.position").fetchall()
    keys = ("participant", "source", "attention", "target", "correct", "response_ms", "chosen_position",
            "candidates", "caption", "trial")
    return [dict(zip(keys, row)) for row in rows]


def analyse_study(study: Path, opts: AnalyseOptions) -> dict:
    db = connect(study)
    sources = json.loads(meta(db)["sources"])
    answers = load_answers(db)
    failures: dict[int, int] = {}
    for a in answers:
        failures.setdefault(a["participant"], 0)
        failures[a["participant"]] += a["attention"] and not a["correct"]
    excluded = sorted(p for p, n in failures.items() if n > opts.max_attention_failures)
    kept = [a for a in answers if not a["attention"] and a["participant"] not in excluded]
    rng = np.random.default_rng(opts.seed)
    table = {}
    for source in sources:
        rows = [a for a in kept if a["source"] == source]
        if not rows:
            table[source] = {"answers": 0}
            continue
        participants = np.unique([a["participant"] for a in rows], return_inverse=True)[1]
        items = np.unique([a["target"] for a in rows], return_inverse=True)[1]
        correct = np.array([a["correct"] for a in rows], dtype=float)
        low, high = crossed_bootstrap(participants, items, correct, opts.bootstrap, rng)
        table[source] = {"answers": len(rows), "participants": int(participants.max() + 1),
                         "accuracy": float(correct.mean()), "ci95": [low, high],
                         "median_response_s": statistics.median(a["response_ms"] for a in rows) / 1000}
    by_target = {}
    for a in kept:
        by_target.setdefault(a["target"], {})[a["source"]] = a
    paired = []
    for first, second in combinations(sources, 2):
        both = [t for t in by_target.values() if first in t and second in t]
        only_first = sum(t[first]["correct"] and not t[second]["correct"] for t in both)
        only_second = sum(t[second]["correct"] and not t[first]["correct"] for t in both)
        paired.append({"sources": [first, second], "targets": len(both), f"only {first}": only_first,
                       f"only {second}": only_second, "p_mcnemar_exact": mcnemar_exact(only_first, only_second)})
    result = {"study": str(study), "sources": sources, "table6": table, "paired": paired,
              "participants": len(failures), "excluded_participants": excluded,
              "attention_failures": {str(p): n for p, n in failures.items() if n},
              "max_attention_failures": opts.max_attention_failures, "bootstrap": opts.bootstrap}
    out = Path(opts.output_dir) if opts.output_dir else study.parent
    out.mkdir(parents=True, exist_ok=True)
    only = opts.only or sources[0]
    result["only_page"] = str(_only_page(db, by_target, only, sources, out / f"only_{_slug(only)}.html"))
    (out / "table6.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "table6.md").write_text(markdown(result))
    db.close()
    return result


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def _only_page(db, by_target: dict, only: str, sources: list[str], path: Path) -> Path:
    """The gallery page of the targets where only ``only``'s caption led its participant to the target."""
    chosen = [t for t in by_target.values() if t.get(only, {}).get("correct")
              and not any(t[s]["correct"] for s in sources if s != only and s in t)]
    images = {row[0]: row[1:] for row in db.execute("SELECT id, source_path, image_id FROM images")}
    records, position = [], {}

    def at(image: int) -> int:
        if image not in position:
            position[image] = len(records)
            source_path, image_id = images[image]
            records.append(ImageRecord(Path(source_path), image_id))
        return position[image]

    targets = [at(t[only]["target"]) for t in chosen]
    captions = []
    for source in sources:
        texts, picked = [], []
        for t in chosen:
            answer = t.get(source)
            texts.append(answer["caption"] if answer else "(not answered)")
            picked.append(at(json.loads(answer["candidates"])[answer["chosen_position"]]) if answer else -1)
        captions.append(Captions(source, texts, None, picked))
    section = Section(f"Targets where only the {only} caption led its participant to the right picture", records,
                      captions, None, len(targets), "a caption is right when its participant chose the target among "
                      "the 10 pictures", "chosen")
    return write_gallery(path, [section])


def markdown(result: dict) -> str:
    lines = [f"Participants' retrieval among the target and 9 hard distractors (the paper's Table 6 layout); "
             f"{result['participants']} participants, {len(result['excluded_participants'])} excluded for failing "
             f"more than {result['max_attention_failures']} attention check(s)", "",
             "| captions | accuracy (%) | 95% CI (participants x targets bootstrap) | answers | median response (s) |",
             "|---|---|---|---|---|"]
    for source, row in result["table6"].items():
        if not row["answers"]:
            lines.append(f"| {source} | - | - | 0 | - |")
            continue
        low, high = row["ci95"]
        lines.append(f"| {source} | {100 * row['accuracy']:.1f} | {100 * low:.1f}-{100 * high:.1f} | "
                     f"{row['answers']} | {row['median_response_s']:.2f} |")
    lines += ["", "| paired sources | targets | only the first right | only the second right | McNemar exact p |",
              "|---|---|---|---|---|"]
    for pair in result["paired"]:
        first, second = pair["sources"]
        lines.append(f"| {first} vs {second} | {pair['targets']} | {pair[f'only {first}']} | "
                     f"{pair[f'only {second}']} | {pair['p_mcnemar_exact']:.3g} |")
    return "\n".join(lines) + "\n"
