"""P@1 against hard distractors (the paper's Sec. 4.2.4 and App. D): each caption must retrieve its image
among the target and the target's k nearest images by cosine of the retriever's image features, or among
candidate sets the user brings (adjacent video frames, a human study's sets).

A candidate set is a row of image positions whose column 0 is the target; sets of different sizes are
padded with the target, which changes no choice (ties go to the target, as in the game's accuracy).
On disk a set is one JSON line, ``{"target": ID, "candidates": [ID, ...]}``, with the dataset's image ids
and the target first among the candidates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from egg_zoo_discritune.jsonl import json_lines

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Images this close to the target are copies of it (the same file twice, re-encoded), not distractors.
DUPLICATE_COSINE = 1 - 1e-5


@torch.no_grad()
def nearest_neighbours(features: torch.Tensor, k: int, chunk_bytes: int = 2**28) -> torch.Tensor:
    """``[N, k]`` positions of each image's k nearest other images by cosine, nearest first; exact
    duplicates of an image (cosine >= ``DUPLICATE_COSINE``, itself included) are never its neighbours.
    Rows are done in chunks whose similarity block stays under ``chunk_bytes``: no N x N matrix."""
    n = features.size(0)
    if k < 1:
        raise ValueError(f"--k {k}: a candidate set needs at least one distractor")
    if n <= k:
        raise ValueError(f"{n} images: too few for sets of the target and its {k} nearest; lower --k")
    unit = F.normalize(features.float(), dim=-1)
    rows = max(1, chunk_bytes // (4 * n))
    neighbours = torch.empty(n, k, dtype=torch.long)
    for start in tqdm(range(0, n, rows), desc=f"{k} nearest images", unit="chunk", leave=False,
                      disable=n <= rows):
        sims = unit[start:start + rows] @ unit.t()
        sims[sims >= DUPLICATE_COSINE] = -float("inf")
        values, positions = sims.topk(k, dim=1)
        if bool(torch.isinf(values[:, -1]).any()):
            raise ValueError(f"{n} images: some image has fewer than {k} others that are not copies of it; "
                             "lower --k")
        neighbours[start:start + rows] = positions.cpu()
    return neighbours


def nearest_sets(features: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, k + 1]``: every image, then its k nearest."""
    return torch.cat([torch.arange(features.size(0)).unsqueeze(1), nearest_neighbours(features, k)], dim=1)


@torch.no_grad()
def retrieved_in_sets(text_features: torch.Tensor, image_features: torch.Tensor, score: Scorer,
                      sets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """The position each target's caption retrieves among its set's images (``text_features`` are in
    image order: caption ``i`` describes image ``i``); ties go to the target."""
    chosen = []
    for start in range(0, sets.size(0), chunk):
        rows = sets[start:start + chunk]
        used, inverse = torch.unique(rows, return_inverse=True)
        scores = score(text_features[rows[:, 0]], image_features[used]).gather(1, inverse.to(image_features.device))
        chosen.append(rows.gather(1, scores.argmax(dim=1, keepdim=True).cpu()).squeeze(1))
    return torch.cat(chosen)


def p_at_1_of_choices(chosen: torch.Tensor, sets: torch.Tensor) -> dict:
    return {"p_at_1_hard": (chosen == sets[:, 0]).float().mean().item(), "n_sets": sets.size(0),
            "set_size": sets.size(1)}


def write_sets(path: Path, sets: torch.Tensor, image_ids: Sequence) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in sets.tolist():
            f.write(json.dumps({"target": image_ids[row[0]], "candidates": [image_ids[i] for i in row]}) + "\n")


def read_sets(path: Path, image_ids: Sequence) -> torch.Tensor:
    """The candidate sets of ``path`` as positions among ``image_ids`` (ids compare as strings). A target
    missing from its own candidates is put first; shorter sets are padded with their target."""
    position = {str(image_id): i for i, image_id in enumerate(image_ids)}
    rows = []
    for where, record in json_lines(path):
        try:
            target, candidates = str(record["target"]), [str(c) for c in record["candidates"]]
        except (KeyError, TypeError) as error:
            raise ValueError(f"{where}: expected a JSON object with 'target' and a list 'candidates' "
                             f"({error!r})") from None
        unknown = [i for i in [target, *candidates] if i not in position]
        if unknown:
            raise ValueError(f"{where}: image id {unknown[0]!r} is not among the {len(position)} test images "
                             "evaluated")
        others = [position[c] for c in dict.fromkeys(candidates) if c != target]
        if not others:
            raise ValueError(f"{where}: target {target!r} has no distractor")
        rows.append([position[target], *others])
    if not rows:
        raise ValueError(f"{path}: no candidate sets")
    width = max(len(r) for r in rows)
    return torch.tensor([r + [r[0]] * (width - len(r)) for r in rows])
