"""Learning benchmark on the toy world: validation P@1 (beam search, blocks of 100) of the alt-text
captioner after N DiscriTune updates, for several baselines and decoding modes, over several seeds.

    python bench/learning.py --toy_dir ~/.cache/discritune/toyworld --epochs 4 --seeds 1 2 3

Prints a Markdown table (median and range over seeds) and writes the raw numbers to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from egg_zoo_discritune.demo import toy_world, train_argv
from egg_zoo_discritune.train import main as train

VARIANTS = {
    "running mean + norm., sampling (demo)": ["--baseline", "mean", "--normalize_advantage"],
    "running mean, sampling": ["--baseline", "mean", "--no-normalize_advantage"],
    "exponential + norm., sampling": ["--baseline", "exponential", "--normalize_advantage"],
    "leave-one-out (batch) + norm., sampling": ["--baseline", "loo", "--normalize_advantage"],
    "leave-one-out over 4 samples per image (RLOO) + norm., sampling": [
        "--baseline", "loo", "--samples_per_image", "4", "--normalize_advantage"],
    "no baseline + norm., sampling": ["--baseline", "none", "--normalize_advantage"],
    "running mean + norm., greedy (the paper's decoding)": ["--baseline", "mean", "--normalize_advantage",
                                              "--train_decoding", "greedy"],
}


def run(toy_dir: str, epochs: int, seed: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = train(train_argv(toy_world(toy_dir), ["--checkpoint_dir", f"{tmp}/run", "--n_epochs", str(epochs),
                                                        "--validation_freq", str(epochs), "--random_seed", str(seed),
                                                        "--kl_coeff", "0", *extra]))  # as measured in bench/README
        tests = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
                 if '"test"' in line]
    return tests[-1]["acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--toy_dir", default="~/.cache/discritune/toyworld")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of 60 updates (batch 100)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default="bench/results/learning.json")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run these variants and merge them "
                        "into an existing --out of the same epochs and seeds")
    args = parser.parse_args()
    out = Path(args.out)
    previous = json.loads(out.read_text()) if args.only and out.is_file() else {}
    if previous and (previous["epochs"], previous["seeds"]) != (args.epochs, args.seeds):
        parser.error(f"{out} holds other epochs or seeds")
    results = previous.get("p_at_1", {})
    for name in args.only or VARIANTS:
        results[name] = [run(args.toy_dir, args.epochs, seed, VARIANTS[name]) for seed in args.seeds]
        print(name, results[name], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"epochs": args.epochs, "seeds": args.seeds, "p_at_1": results}, indent=2) + "\n")
    print(f"\n| variant ({args.epochs * 60} updates) | val P@1 median (%) | min-max (%) |\n|---|---|---|")
    for name in [n for n in VARIANTS if n in results]:
        values = results[name]
        print(f"| {name} | {100 * statistics.median(values):.1f} | {100 * min(values):.1f}-{100 * max(values):.1f} |")


if __name__ == "__main__":
    main()
