"""Evaluation results as the paper lays them out: Table 1 (P@1 per test set) and Tables 2/3
(BLEU-4, METEOR, CIDEr, SPICE per test set), in Markdown, plus a flat CSV."""

from __future__ import annotations

import csv
from pathlib import Path

HUMAN = "Human captions"  # the source of the first human reference of every image
NLG_COLUMNS = (("bleu_4", "B@4"), ("meteor", "M"), ("cider", "C"), ("spice", "S"))


def _pct(value) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "n/a"


def _grid(results: list[dict]) -> tuple[list[str], list[str], dict]:
    models = list(dict.fromkeys(r["model"] for r in results))
    sets = list(dict.fromkeys(r["test_set"] for r in results))
    return models, sets, {(r["model"], r["test_set"]): r for r in results}


def _p_at_1_table(title: str, key: str, models: list[str], sets: list[str], titles: dict, cell: dict) -> list[str]:
    lines = [title, "", "| model | " + " | ".join(titles[s] for s in sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for model in models:
        values = (_pct(cell[model, s].get(key)) if (model, s) in cell else "" for s in sets)
        lines.append(f"| {model} | " + " | ".join(values) + " |")
    return lines


def markdown_tables(results: list[dict]) -> str:
    models, sets, cell = _grid(results)
    titles = {r["test_set"]: r["title"] for r in results}
    block = results[0]["block_size"]
    lines = _p_at_1_table(f"P@1 (%) among blocks of {block} consecutive test images (the paper's Table 1 layout)",
                          "p_at_1", models, sets, titles, cell)
    hard = {s: r["hard_distractors"] for r in results if "p_at_1_hard" in r for s in [r["test_set"]]}
    if hard:
        kinds = "; ".join(f"{titles[s]}: {kind}" for s, kind in hard.items())
        lines += [""] + _p_at_1_table(f"P@1 (%) among each target and its hard distractors ({kinds}; the paper's "
                                      "App. D)", "p_at_1_hard", models, list(hard), titles, cell)
    scored = [m for m in models if any("cider" in cell.get((m, s), {}) for s in sets)]
    if scored:
        lines += ["", "Caption quality (%) against the human references (the paper's Tables 2/3 layout)", "",
                  "| model | " + " | ".join(f"{titles[s]} {short}" for s in sets for _, short in NLG_COLUMNS) + " |",
                  "|---" * (len(sets) * len(NLG_COLUMNS) + 1) + "|"]
        for model in scored:
            lines.append(f"| {model} | " + " | ".join(_pct(cell.get((model, s), {}).get(key))
                                                        for s in sets for key, _ in NLG_COLUMNS) + " |")
    notes = sorted({f"{titles[r['test_set']]}: {r['n_images']} images read, {r['n_skipped']} skipped "
                    f"(missing or undecodable), {r['n_dropped']} left out of the incomplete last block"
                    for r in results})
    reasons = sorted({r["spice"] for r in results if isinstance(r.get("spice"), str)})
    return "\n".join(lines + [""] + [f"- {n}" for n in notes] + [f"- SPICE {r}" for r in reasons]) + "\n"


def write_csv(results: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for r in results for k, v in r.items() if not isinstance(v, (dict, list))))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in results:
            writer.writerow({k: r.get(k, "") for k in columns})
