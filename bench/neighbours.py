"""Time and peak memory of the hard-distractor sets: the k nearest images of each of N images by cosine.

    python bench/neighbours.py --n 100000 --dim 512 --k 9 --repeats 3

Random features (seeded) stand in for the retriever's image features; ``nearest_neighbours`` works in row
chunks whose similarity block stays under ``--chunk_mib``, so memory follows the chunk, not N x N (an
fp32 100K x 100K matrix alone would be 37 GiB). Each repeat runs in this process after the kernel's
high-water mark is reset; the peak is over the features, the chunks and the result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from speed import lscpu, peak_rss_gib, reset_peak_rss  # bench/speed.py, beside this file

from egg_zoo_discritune.metrics.hard_distractors import nearest_neighbours


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="images")
    parser.add_argument("--dim", type=int, default=512, help="feature size (CLIP ViT-B/32: 512)")
    parser.add_argument("--k", type=int, default=9, help="nearest images per image")
    parser.add_argument("--chunk_mib", type=int, default=256, help="the similarity block's size limit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/neighbours.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    features = torch.randn(args.n, args.dim, generator=torch.Generator().manual_seed(0))
    reset_peak_rss()
    before = peak_rss_gib()
    seconds, peaks = [], []
    for _ in range(args.repeats):
        reset_peak_rss()
        start = time.perf_counter()
        neighbours = nearest_neighbours(features, args.k, chunk_bytes=args.chunk_mib * 2**20)
        seconds.append(time.perf_counter() - start)
        peaks.append(peak_rss_gib())
    assert neighbours.shape == (args.n, args.k)
    result = {"n": args.n, "dim": args.dim, "k": args.k, "chunk_mib": args.chunk_mib, "threads": args.threads,
              "median_s": statistics.median(seconds), "seconds": seconds, "peak_rss_gib": max(peaks),
              "rss_before_gib": before, "features_gib": features.numel() * 4 / 2**30, "cpu": lscpu()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.n} x {args.dim} features, k={args.k}: median {result['median_s']:.1f} s "
          f"({min(seconds):.1f}-{max(seconds):.1f}), peak RSS {result['peak_rss_gib']:.2f} GiB "
          f"(features {result['features_gib']:.2f} GiB, process before {before:.2f} GiB)")
    return result


if __name__ == "__main__":
    main()
