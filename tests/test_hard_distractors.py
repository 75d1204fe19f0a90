"""Hard distractors: nearest-neighbour candidate sets, P@1 among them, the JSONL sets, and evaluate's tables."""

import json
import math

import pytest
import torch

from egg_zoo_discritune.analyse import main as analyse_main
from egg_zoo_discritune.evaluate import HUMAN, main as evaluate_main
from egg_zoo_discritune.metrics.hard_distractors import (nearest_neighbours, nearest_sets, p_at_1_of_choices,
                                                         read_sets, retrieved_in_sets, write_sets)
from tests.test_eval_data import CONCADIA_SAMPLE
from tests.test_evaluate import _models


def _circle(degrees):
    """Unit vectors at these angles, scaled differently (cosine ignores the norm)."""
    return torch.tensor([[(1 + i) * math.cos(math.radians(d)), (1 + i) * math.sin(math.radians(d))]
                         for i, d in enumerate(degrees)])


def dot(text, images):
    return text @ images.t()


def test_nearest_neighbours_by_cosine_in_chunks_without_duplicates():
    # Angles 0, 10, 30, 100, 180, 185 and a copy of the 100-degree image: the nearest of 100 are 30 and 180, its
    # copy excluded (and the same for the copy); 180 and 185 are each other's nearest, then both 100s tie.
    features = _circle([0, 10, 30, 100, 180, 185, 100])
    for chunk_bytes in (4 * 7 * 2, 2**28):  # two rows per chunk, or all at once
        neighbours = nearest_neighbours(features, 2, chunk_bytes=chunk_bytes).tolist()
        assert [neighbours[i] for i in (0, 1, 2, 3, 6)] == [[1, 2], [0, 2], [1, 0], [2, 4], [2, 4]]
        assert neighbours[4][0] == 5 and neighbours[5][0] == 4 and {neighbours[4][1], neighbours[5][1]} <= {3, 6}
    sets = nearest_sets(features, 2)
    assert sets[:, 0].tolist() == list(range(7)) and sets.shape == (7, 3)


def test_too_few_distinct_images_are_refused():
    with pytest.raises(ValueError, match="3 images: too few for sets of the target and its 3 nearest"):
        nearest_neighbours(torch.randn(3, 4), 3)
    with pytest.raises(ValueError, match="fewer than 2 others that are not copies of it; lower --k"):
        nearest_neighbours(_circle([0, 0, 90]), 2)


def test_p_at_1_among_sets_by_hand():
    images = torch.eye(4)
    # Caption 0 scores image 0 best; caption 1 prefers image 3, which is in its set; caption 2 prefers image 3,
    # which is not in its set, so it retrieves its own; caption 3 ties its image with image 0: the target wins.
    texts = torch.tensor([[1.0, 0, 0, 0], [0, 0.5, 0, 0.9], [0, 0, 0.2, 0.9], [0.7, 0, 0, 0.7]])
    sets = torch.tensor([[0, 1, 2], [1, 3, 0], [2, 0, 1], [3, 0, 1]])
    chosen = retrieved_in_sets(texts, images, dot, sets, chunk=2)
    assert chosen.tolist() == [0, 3, 2, 3]
    result = p_at_1_of_choices(chosen, sets)
    assert result == {"p_at_1_hard": 0.75, "n_sets": 4, "set_size": 3}


def test_sets_round_trip_through_jsonl_and_user_sets_are_checked(tmp_path):
    ids = [101, 102, "x3", 104]
    sets = torch.tensor([[0, 1, 2], [3, 2, 1]])
    path = tmp_path / "sets.jsonl"
    write_sets(path, sets, ids)
    assert json.loads(path.read_text().splitlines()[1]) == {"target": 104, "candidates": [104, "x3", 102]}
    assert torch.equal(read_sets(path, ids), sets)
    # A user's file: ids as strings, the target missing from its candidates, sets of different sizes.
    path.write_text('{"target": "102", "candidates": ["101", "104"]}\n\n{"target": 104, "candidates": [104, 101, '
                    '"x3", 102]}\n')
    assert read_sets(path, ids).tolist() == [[1, 0, 3, 1], [3, 0, 2, 1]]
    for line, message in (('{"target": 999, "candidates": [101]}', "sets.jsonl:1: image id '999' is not among"),
                          ('{"target": 101}', "sets.jsonl:1: expected a JSON object with 'target' and a list"),
                          ('{"target": 101, "candidates": [101]}', "sets.jsonl:1: target '101' has no distractor")):
        path.write_text(line + "\n")
        with pytest.raises(ValueError, match=message):
            read_sets(path, ids)


def test_evaluate_with_nearest_distractors_and_given_sets(tiny, tmp_path):
    common = [*_models(tiny), "--checkpoints", "pretrained", "--test_sets", "coco", "--root",
              f"coco={tiny.coco_root}", "--block_size", "2", "--decoding", "greedy", "--no-nlg"]
    results = evaluate_main([*common, "--distractors", "nearest", "--k", "2", "--output_dir", str(tmp_path / "a")])
    by_model = {r["model"]: r for r in results}
    assert set(by_model) == {"ClipCap (pretrained)", HUMAN}
    for row in results:
        assert row["hard_distractors"] == "2 nearest" and row["set_size"] == 3 and row["n_sets"] == 4
        assert 0 <= row["p_at_1_hard"] <= 1
    written = tmp_path / "a" / "candidate_sets" / "coco.jsonl"
    lines = [json.loads(line) for line in written.read_text().splitlines()]
    assert len(lines) == 4 and all(line["candidates"][0] == line["target"] for line in lines)
    assert "hard distractors (COCO" in (tmp_path / "a" / "results.md").read_text()
    # The written sets, given back, give the same numbers.
    again = evaluate_main([*common, "--candidate_sets", str(written), "--output_dir", str(tmp_path / "b")])
    for first, second in zip(results, again):
        assert second["p_at_1_hard"] == first["p_at_1_hard"] and second["hard_distractors"] == "the sets of coco.jsonl"
    assert not (tmp_path / "b" / "candidate_sets").exists()


@pytest.mark.skipif(not CONCADIA_SAMPLE.is_dir(), reason="the real Concadia sample (../shared/data) is not here")
def test_hard_distractors_gallery_and_analysis_on_the_real_concadia_sample(tiny, tmp_path):
    out = tmp_path / "eval"
    results = evaluate_main([*_models(tiny), "--checkpoints", "pretrained", "--test_sets", "concadia", "--root",
                             f"concadia={CONCADIA_SAMPLE}", "--block_size", "8", "--decoding", "greedy", "--no-nlg",
                             "--distractors", "nearest", "--k", "5", "--output_dir", str(out)])
    assert {r["n_sets"] for r in results} == {16} and {r["set_size"] for r in results} == {6}
    sets = [json.loads(line) for line in (out / "candidate_sets" / "concadia.jsonl").read_text().splitlines()]
    assert all(len(set(s["candidates"])) == 6 and s["candidates"][0] == s["target"] for s in sets)
    assert (out / "gallery.html").read_text().count('class="card"') == 16
    # The Wikipedia captions are real English: spaCy finds their nouns.
    result = analyse_main(["--captions", str(out / "captions" / "ClipCap (pretrained)__concadia.jsonl"),
                           "--output_dir", str(tmp_path / "analysis")])
    assert len(result["nouns"][HUMAN]) == 10 and result["statistics"][HUMAN]["captions"] == 16
