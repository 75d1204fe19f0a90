"""Request latency of the study server under concurrent participants, over loopback.

    python bench/study_load.py --study study.sqlite --participants 20

Works on a copy of ``--study`` (the original keeps no answers): serves it with uvicorn in this process and
lets ``--participants`` simulated participants take it at the same time through the HTTP endpoints (every
trial: the trial's JSON, its 10 pictures, the answer). Every answer is the first picture, so the time is
the server's, not a retriever's. Reports the latency percentiles of all requests and checks that the
database holds exactly one answer per trial answered.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from speed import lscpu  # bench/speed.py, beside this file

from egg_zoo_discritune.study.app import create_app
from egg_zoo_discritune.study.simulate import running, simulate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True, help="a study file made by discritune-study build")
    parser.add_argument("--participants", type=int, default=20, help="participants answering at the same time")
    parser.add_argument("--out", default="bench/results/study_load.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.sqlite"
        shutil.copy(args.study, study)
        start = time.perf_counter()
        with running(create_app(study, "bench")) as url:
            results = simulate(url, lambda caption, images: 0, concurrency=args.participants,
                               limit=args.participants)
        seconds = time.perf_counter() - start
        with sqlite3.connect(study) as db:
            stored, distinct = db.execute("SELECT count(*), count(DISTINCT slot || '-' || position) "
                                          "FROM answers").fetchone()
    if not results:
        raise SystemExit(f"{args.study}: no free participant slot (every slot has started)")
    answered = sum(r["answers"] for r in results)
    latencies = sorted(s for r in results for s in r["latencies_s"])
    percentile = {f"p{q}_ms": 1000 * latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))]
                  for q in (50, 95, 99)}
    result = {"participants": len(results), "answers": answered, "stored": stored, "distinct": distinct,
              "requests": len(latencies), "seconds": seconds, "answers_per_s": answered / seconds,
              "median_ms": 1000 * statistics.median(latencies), **percentile, "cpu": lscpu()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(results)} participants, {answered} answers ({stored} stored, {distinct} distinct), "
          f"{len(latencies)} requests in {seconds:.1f} s: p50 {percentile['p50_ms']:.1f} ms, "
          f"p95 {percentile['p95_ms']:.1f} ms, p99 {percentile['p99_ms']:.1f} ms")
    if not answered == stored == distinct:
        raise SystemExit("answers lost or duplicated")
    return result


if __name__ == "__main__":
    main()
