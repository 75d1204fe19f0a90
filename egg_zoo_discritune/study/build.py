"""``discritune-study build``: the study file of a human retrieval study (the paper's Table 6).

Every trial is one caption and ten images: its target and the target's hard distractors, in an order
shuffled per trial. Each (target, caption source) pair is one trial, seen by one participant; each
participant's slot holds ``--per_participant`` trials of distinct targets with the sources balanced,
plus ``--attention_checks`` trials whose caption is the target's own human reference among random images.
Everything is drawn from ``--seed``: the same inputs and seed give the same study.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from PIL import Image

from egg_zoo_discritune.data_loaders.eval_sets import parse_eval_set
from egg_zoo_discritune.data_loaders.image_modes import to_rgb
from egg_zoo_discritune.data_loaders.images import ImageRecord, read_image_bytes
from egg_zoo_discritune.jsonl import json_lines
from egg_zoo_discritune.metrics.hard_distractors import read_sets
from egg_zoo_discritune.options import opt
from egg_zoo_discritune.report import HUMAN
from egg_zoo_discritune.study.store import connect

IMAGE_SIDE = 384  # pixels on the long side of the copies the study serves


@dataclass
class BuildOptions:
    """What the study shows, to how many people, from which seed."""

    study: str = opt("study.sqlite", "the study file to create (never overwritten)")
    test_set: str = opt("coco", "the test set, NAME or NAME:SPLIT as in evaluate --test_sets")
    data_dir: str = opt("data", "folder holding one sub-folder per dataset")
    root: list[str] = opt([], "where the test set lives instead, as NAME=PATH")
    captions: list[str] = opt([], "caption sources: captions JSONL files from evaluate, LABEL=FILE (the label "
                                  "is never shown to participants)")
    human: bool = opt(True, f"the first human reference of each image is one more source, {HUMAN!r}")
    candidate_sets: Optional[str] = opt(None, "the hard-distractor sets (JSONL from evaluate --distractors nearest "
                                              "or --candidate_sets); each target with its first 9 distractors")
    n_sets: int = opt(500, "targets drawn at random among those with a set and a caption from every source "
                           "(the paper: 500)")
    distractors: int = opt(9, "distractors per trial (the paper: 9, so 10 images)")
    per_participant: int = opt(100, "trials per participant, each of another target (the paper: 100)")
    attention_checks: int = opt(5, "attention-check trials per participant, at random positions")
    seed: int = opt(0, "seed of every draw: targets, image order, assignment")


def _captions_by_image(spec: str) -> tuple[str, dict[str, str]]:
    label, sep, path = spec.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"--captions {spec!r}: expected LABEL=FILE")
    captions = {}
    for where, row in json_lines(Path(path)):
        if not isinstance(row, dict) or "image_id" not in row or not isinstance(row.get("caption"), str):
            raise ValueError(f"{where}: expected a JSON object with 'image_id' and 'caption', as evaluate writes")
        captions[str(row["image_id"])] = row["caption"]
    return label, captions


def _jpeg(record: ImageRecord) -> tuple[bytes, str]:
    """The image as a JPEG copy at most ``IMAGE_SIDE`` pixels on a side, and the SHA-256 of its file."""
    data = read_image_bytes(record, {})
    with Image.open(io.BytesIO(data)) as image:
        copy = to_rgb(image)
        copy.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
        buffer = io.BytesIO()
        copy.save(buffer, "JPEG", quality=90)
    return buffer.getvalue(), hashlib.sha256(data).hexdigest()


def balanced_slots(targets: list[int], sources: list[str], per_participant: int) -> list[list[tuple[int, str]]]:
    """Every (target, source) pair once, cut into slots of ``per_participant`` pairs: source ``j`` goes with
    target ``i`` in round ``r`` when ``j = (i + r) mod len(sources)``, so consecutive pairs cycle through the
    sources (balanced to one) and a slot, shorter than a round, never holds a target twice."""
    if per_participant > len(targets):
        raise ValueError(f"--per_participant {per_participant}: more than the {len(targets)} targets, so a "
                         "participant would see a target twice")
    pairs = [(t, sources[(i + r) % len(sources)]) for r in range(len(sources)) for i, t in enumerate(targets)]
    return [pairs[start:start + per_participant] for start in range(0, len(pairs), per_participant)]


def build_study(opts: BuildOptions) -> Path:
    rng = random.Random(opts.seed)
    eval_set, split = parse_eval_set(opts.test_set)
    records = [r for r in eval_set.read(eval_set.root(opts.root, opts.data_dir), split) if r.path.is_file()]
    ids = [str(r.image_id) for r in records]
    sources = dict(_captions_by_image(spec) for spec in opts.captions)
    if opts.human:
        sources[HUMAN] = {str(r.image_id): r.captions[0] for r in records if r.captions}
    if len(sources) < 2:
        raise ValueError("a study compares at least two caption sources: give --captions (and keep --human)")
    if not opts.candidate_sets:
        raise ValueError("--candidate_sets: give the hard-distractor sets (evaluate --distractors nearest writes "
                         "them to <output_dir>/candidate_sets/)")
    sets = {row[0]: row[1:] for row in read_sets(Path(opts.candidate_sets), ids).tolist()}
    usable = sorted(t for t, distractors in sets.items()
                    if len(set(distractors) - {t}) >= opts.distractors and all(ids[t] in s for s in sources.values()))
    if len(usable) < opts.n_sets:
        raise ValueError(f"{len(usable)} targets have {opts.distractors} distractors and a caption from every source "
                         f"({', '.join(sources)}); --n_sets {opts.n_sets} is more")
    spare = sum(1 for r in records if r.captions) - opts.per_participant
    if opts.attention_checks > spare:
        raise ValueError(f"--attention_checks {opts.attention_checks}: each needs a target the participant does not "
                         f"otherwise see, and {len(records)} images leave {max(spare, 0)} beside "
                         f"--per_participant {opts.per_participant}")
    targets = sorted(rng.sample(usable, opts.n_sets))
    rng.shuffle(targets)

    study = Path(opts.study)
    if study.exists():
        raise FileExistsError(f"{study} exists: a study is never overwritten; choose another file")
    partial = study.with_name(study.name + ".partial")  # renamed once complete, so a failed build leaves nothing
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    db = connect(partial, create=True)
    try:
        _fill(db, opts, rng, records, ids, sources, sets, targets)
    except BaseException:
        db.close()
        partial.unlink(missing_ok=True)
        raise
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    partial.replace(study)
    return study


def _fill(db, opts: BuildOptions, rng: random.Random, records: list[ImageRecord], ids: list[str],
          sources: dict[str, dict[str, str]], sets: dict[int, list[int]], targets: list[int]) -> None:
    db.execute("BEGIN")
    image_rows: dict[int, int] = {}

    def image_row(position: int) -> int:
        if position not in image_rows:
            jpeg, sha = _jpeg(records[position])
            image_rows[position] = db.execute(
                "INSERT INTO images (image_id, source_path, sha256, jpeg) VALUES (?, ?, ?, ?)",
                (ids[position], str(records[position].path), sha, jpeg)).lastrowid
        return image_rows[position]

    def add_trial(target: int, source: str, caption: str, distractors: list[int], attention: bool) -> int:
        shown = [target, *distractors]
        rng.shuffle(shown)
        return db.execute("INSERT INTO trials (target_image, source, caption, candidates, target_position, "
                          "attention) VALUES (?, ?, ?, ?, ?, ?)",
                          (image_row(target), source, caption, json.dumps([image_row(p) for p in shown]),
                           shown.index(target), int(attention))).lastrowid

    for slot_pairs in balanced_slots(targets, list(sources), opts.per_participant):
        slot = db.execute("INSERT INTO slots DEFAULT VALUES").lastrowid
        trials = [add_trial(t, source, sources[source][ids[t]],
                            [d for d in dict.fromkeys(sets[t]) if d != t][:opts.distractors], False)
                  for t, source in slot_pairs]
        seen = {t for t, _ in slot_pairs}
        for _ in range(opts.attention_checks):
            target = rng.choice([p for p in range(len(records)) if p not in seen and records[p].captions])
            seen.add(target)
            others = rng.sample([p for p in range(len(records)) if p != target], opts.distractors)
            trials.insert(rng.randrange(len(trials) + 1),
                          add_trial(target, "attention check", records[target].captions[0], others, True))
        db.executemany("INSERT INTO assignments (slot, position, trial) VALUES (?, ?, ?)",
                       [(slot, k, trial) for k, trial in enumerate(trials)])
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                   [("options", json.dumps(asdict(opts))), ("sources", json.dumps(list(sources))),
                    ("test_set", opts.test_set)])
    db.execute("COMMIT")
