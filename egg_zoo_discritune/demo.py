"""The offline demo: ``python -m egg.zoo.discritune.demo`` (``make demo``).

Builds the toy world on first use, finetunes its alt-text captioner with DiscriTune (``train`` with
``--preset demo`` and the world's paths), then evaluates it against its vanilla version in and out of
domain in the paper's table layout. Any training flag can be added and overrides the preset's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from egg_zoo_discritune.archs.clipcap import EXPORT_FILE
from egg_zoo_discritune.cli import run as run_cli
from egg_zoo_discritune.engine.distributed import launched_by_torchrun
from egg_zoo_discritune.evaluate import main as evaluate
from egg_zoo_discritune.run_dir import CONFIG_FILE
from egg_zoo_discritune.toyworld.build import DEFAULT_DIR, BuildOptions, build, is_built, train_flags
from egg_zoo_discritune.train import main as train

log = logging.getLogger("discritune")
VANILLA = "ClipCap-alttext (vanilla)"
FINETUNED = "ClipCap-alttext + DiscriTune"
DESCRIPTIVE = "ClipCap-descriptive (vanilla)"
# The README's demo numbers: (lowest, highest) over seeds 111, 222 and 333 of `make demo` on a fresh clone.
README_RANGES = {
    (FINETUNED, "toyworld", "p_at_1"): (0.207, 0.240),
    (FINETUNED, "toyworld-ood", "p_at_1"): (0.179, 0.236),
    (FINETUNED, "toyworld", "cider"): (0.190, 0.426),
}


def toy_world(toy_dir: str) -> Path:
    """The toy world in ``toy_dir``, built there first if it is not."""
    toy = Path(toy_dir).expanduser()
    if not is_built(toy):
        log.info("building the toy world and its pretrained models in %s (a few minutes, once)", toy)
        build(BuildOptions(out=str(toy)))
    return toy


def train_argv(toy: Path, argv: Sequence[str] = ()) -> list[str]:
    """The training flags of a demo run on ``toy``; ``argv`` comes last, so it overrides them."""
    return ["--preset", "demo", *train_flags(toy), *argv]


def _examples(eval_dir: Path, test_set: str, n: int = 4) -> list[str]:
    def captions(label: str) -> list[dict]:
        path = eval_dir / "captions" / f"{label}__{test_set}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()[:n]]

    lines = []
    for before, after in zip(captions(VANILLA), captions(FINETUNED)):
        lines += [f"- {Path(before['path']).name}: {before['references'][0]}",
                  f"  - before: {before['caption']}", f"  - after:  {after['caption']}"]
    return lines


def report(toy: Path, run_dir: Path) -> str:
    """P@1 and caption quality of the vanilla and finetuned alt-text captioners (and, for reference, the
    descriptive one) on the in-domain and out-of-domain test sets; written to ``<run>/eval``."""
    cfg = json.loads((run_dir / CONFIG_FILE).read_text())
    eval_dir = run_dir / "eval"
    evaluate([
        "--checkpoints", str(toy / "clipcap_alttext.pt"), str(run_dir / EXPORT_FILE), str(toy / "clipcap_descriptive.pt"),
        "--labels", VANILLA, FINETUNED, DESCRIPTIVE, "--test_sets", "toyworld", "toyworld-ood",
        "--root", f"toyworld={toy}", "--gpt2", cfg["sender"]["gpt2"], "--receiver", cfg["receiver"]["receiver"],
        "--similarity", cfg["receiver"]["similarity"], "--stop_rule", cfg["sender"]["stop_rule"],
        "--max_len", str(cfg["game"]["max_len"]), "--num_workers", str(cfg["data"]["num_workers"]),
        "--output_dir", str(eval_dir),
    ])
    examples = ["", "Example captions of in-domain test images (reference: the descriptive human caption):",
                *_examples(eval_dir, "toyworld")]
    print("\n".join(examples))
    print("\n".join(["", "Against the README's range (seeds 111, 222, 333):",
                      *against_readme(json.loads((eval_dir / "results.json").read_text())["results"])]))
    table = (eval_dir / "results.md").read_text() + "\n".join(examples) + "\n"
    (run_dir / "demo.md").write_text(table)
    return table


def against_readme(results: list[dict]) -> list[str]:
    """One line per number the README reports: the value, and whether it lies in the README's range."""
    rows = {(r["model"], r["test_set"]): r for r in results}
    lines = []
    for (model, test_set, metric), (low, high) in README_RANGES.items():
        value = round(100 * rows[model, test_set][metric], 1)  # compared as the tables print it
        verdict = "within" if round(100 * low, 1) <= value <= round(100 * high, 1) else "OUTSIDE"
        lines.append(f"- {model}, {test_set}, {metric}: {value:.1f} ({verdict} {100 * low:.1f}-{100 * high:.1f})")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m egg.zoo.discritune.demo", description=__doc__.split("\n")[0],
                                     epilog="Every other flag is a training flag (python -m egg.zoo.discritune.train "
                                            "--preset demo --help).")
    parser.add_argument("--toy_dir", default=DEFAULT_DIR,
                        help="where the toy world is built on first use (default: %(default)s)")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                        help="evaluate the vanilla and finetuned captioners after training (default: %(default)s)")
    opts, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if launched_by_torchrun():
        raise ValueError("the demo runs in one process; under torchrun use python -m egg.zoo.discritune.train")
    toy = toy_world(opts.toy_dir)
    run_dir = train(train_argv(toy, rest))
    if opts.report:
        report(toy, run_dir)
        changed = [flag for flag in rest if flag.startswith("--") and flag not in ("--checkpoint_dir", "--random_seed")]
        if changed:
            print(f"(the README's range is for the preset as it is; {' '.join(changed)} changed it)")
    return run_dir


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
