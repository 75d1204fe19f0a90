"""Training curves: ``python -m egg.zoo.discritune.plot RUN_DIR [RUN_DIR ...]``.

Reads each run's ``log.jsonl`` and draws reward, P@1 (the in-batch accuracy while training, the
validation P@1 as markers), loss, baseline, caption length, entropy and, when the run has one, the KL
penalty against updates, every run overlaid in its own colour. Writes ``curves.png`` and ``curves.svg``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from egg_zoo_discritune.cli import run as run_cli
from egg_zoo_discritune.jsonl import json_lines
from egg_zoo_discritune.run_dir import LOG_FILE

PANELS = (("reward", "reward"), ("acc", "P@1 (train: in-batch; o: validation)"), ("loss", "loss"),
          ("baseline", "baseline"), ("length", "caption length (tokens)"), ("entropy", "entropy per token"),
          ("kl", "KL to the initial captioner"))


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / LOG_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (give run directories, which hold {LOG_FILE})")
    records = [record for _, record in json_lines(path)]
    steps = [r for r in records if r.get("mode") == "train_step" and "step" in r]
    if not steps:
        raise ValueError(f"{path}: no per-update lines (mode 'train_step'); train with --log_every N")
    return records


def plot_runs(runs: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Draws the panels every run logs; returns the PNG and SVG paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in PANELS
              if any(key in r for records in runs.values() for r in records if r.get("mode") == "train_step")]
    columns = 3
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        for k, (name, records) in enumerate(runs.items()):
            colour = f"C{k % 10}"
            train = [(r["step"], r[key]) for r in records if r.get("mode") == "train_step" and key in r]
            if train:
                ax.plot(*zip(*train), color=colour, label=name, linewidth=1.2)
            tests = [(r["step"], r[key]) for r in records if r.get("mode") == "test" and key in r and "step" in r]
            if tests and key == "acc":
                ax.plot(*zip(*tests), "o--", color=colour, markersize=4, linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "curves.png", out_dir / "curves.svg"]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m egg.zoo.discritune.plot", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (or their log.jsonl files), overlaid")
    parser.add_argument("--labels", nargs="+", default=None, help="names in the legend (default: the folder names)")
    parser.add_argument("--output_dir", default="plots", help="where curves.png and curves.svg go (default: "
                                                                "%(default)s)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.labels and len(args.labels) != len(args.runs):
        raise ValueError(f"{len(args.labels)} --labels for {len(args.runs)} runs")
    paths = [Path(run) for run in args.runs]
    labels = args.labels or [p.name if p.is_dir() else p.parent.name for p in paths]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two runs have the same name ({', '.join(labels)}); give --labels")
    written = plot_runs({label: read_log(path) for label, path in zip(labels, paths)}, Path(args.output_dir))
    print("\n".join(str(p) for p in written))
    return written


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
