"""The ``--preset demo`` run: builds the toy world on first use, finetunes the alt-text captioner with
DiscriTune, then evaluates it against its vanilla version in and out of domain."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from egg_zoo_discritune.config import TrainConfig
from egg_zoo_discritune.evaluate import main as evaluate
from egg_zoo_discritune.factory import EXPORT_FILE
from egg_zoo_discritune.toyworld.build import BuildOptions, build, is_built

log = logging.getLogger("discritune")
VANILLA = "ClipCap-alttext (vanilla)"
FINETUNED = "ClipCap-alttext + DiscriTune"
DESCRIPTIVE = "ClipCap-descriptive (vanilla)"


def prepare(cfg: TrainConfig) -> TrainConfig:
    """Builds the toy world into ``--toy_dir`` if it is not there, and points every unset path at it."""
    toy = Path(cfg.run.toy_dir).expanduser()
    if not is_built(toy):
        log.info("building the toy world and its pretrained models in %s (a few minutes, once)", toy)
        build(BuildOptions(out=str(toy)))

    def fill(options, **paths):
        return dataclasses.replace(options, **{k: getattr(options, k) or str(v) for k, v in paths.items()})

    return dataclasses.replace(
        cfg,
        data=fill(cfg.data, annotations=toy / "train.jsonl", val_annotations=toy / "val.jsonl"),
        sender=fill(cfg.sender, gpt2=toy / "gpt2", clipcap_weights=toy / "clipcap_alttext.pt"),
        receiver=fill(cfg.receiver, receiver=toy / "clip"),
    )


def _examples(eval_dir: Path, test_set: str, n: int = 4) -> list[str]:
    def captions(label: str) -> list[dict]:
        path = eval_dir / "captions" / f"{label}__{test_set}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()[:n]]

    lines = []
    for before, after in zip(captions(VANILLA), captions(FINETUNED)):
        lines += [f"- {Path(before['path']).name}: {before['references'][0]}",
                  f"  - before: {before['caption']}", f"  - after:  {after['caption']}"]
    return lines


def report(cfg: TrainConfig, run_dir: Path) -> str:
    """P@1 and caption quality of the vanilla and finetuned alt-text captioners (and, for reference, the
    descriptive one) on the in-domain and out-of-domain test sets; written to ``<run>/eval``."""
    toy = Path(cfg.run.toy_dir).expanduser()
    eval_dir = run_dir / "eval"
    evaluate([
        "--checkpoints", str(toy / "clipcap_alttext.pt"), str(run_dir / EXPORT_FILE), str(toy / "clipcap_descriptive.pt"),
        "--labels", VANILLA, FINETUNED, DESCRIPTIVE, "--test_sets", "toyworld", "toyworld-ood",
        "--root", f"toyworld={toy}", "--gpt2", cfg.sender.gpt2, "--receiver", cfg.receiver.receiver,
        "--similarity", cfg.receiver.similarity, "--max_len", str(cfg.egg.max_len),
        "--num_workers", str(cfg.data.num_workers), "--output_dir", str(eval_dir),
    ])
    examples = ["", "Example captions of in-domain test images (reference: the descriptive human caption):",
                *_examples(eval_dir, "toyworld")]
    print("\n".join(examples))
    table = (eval_dir / "results.md").read_text() + "\n".join(examples) + "\n"
    (run_dir / "demo.md").write_text(table)
    return table
