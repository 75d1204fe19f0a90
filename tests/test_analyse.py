"""Caption language analysis: local mutual information by hand, and the command on a small corpus with the real
spaCy English pipeline."""

import json
import math
from collections import Counter

import pytest

from egg_zoo_discritune.analyse import HUMAN, load_pipeline, main
from egg_zoo_discritune.metrics.lmi import local_mutual_information


def test_local_mutual_information_by_hand():
    # N = 7 nouns; rows car 3, bus 1, picture 3; columns A 3, B 4. E(car, A) = 3 * 3 / 7, so
    # LMI(car, A) = 2 log2(14 / 9); LMI(bus, A) = log2(7 / 3); LMI(picture, B) = 3 log2(7 / 4); car is
    # rarer than expected in B (LMI < 0), so B lists only picture.
    counts = {"A": Counter(car=2, bus=1), "B": Counter(car=1, picture=3)}
    ranked = local_mutual_information(counts)
    assert [lemma for lemma, _, _ in ranked["A"]] == ["car", "bus"]
    assert ranked["A"][0][1] == pytest.approx(2 * math.log2(14 / 9)) and ranked["A"][0][2] == 2
    assert ranked["A"][1][1] == pytest.approx(math.log2(7 / 3))
    assert ranked["B"] == [("picture", pytest.approx(3 * math.log2(7 / 4)), 3)]
    assert local_mutual_information(counts, top=1)["A"] == [ranked["A"][0]]


def _captions(path, captions, references):
    path.write_text("".join(json.dumps({"image_id": i, "caption": c, "references": r}) + "\n"
                            for i, (c, r) in enumerate(zip(captions, references))))
    return path


def test_analyse_a_small_corpus_with_spacy(tmp_path):
    references = [["a small red circle at the top."], ["a large blue square on the left."], ["a small blue circle."]]
    finetuned = _captions(tmp_path / "finetuned__toyworld.jsonl",
                          ["a small red circle.", "a large blue square.", "a small blue circle."], references)
    alt_texts = ["digital art of geometric shapes.", "a minimalist picture.", "digital art of geometric shapes."]
    vanilla = _captions(tmp_path / "vanilla__toyworld.jsonl", alt_texts, references)
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "train.jsonl").write_text("".join(
        json.dumps({"image": f"{i}.png", "captions": r}) + "\n" for i, r in enumerate(references)))
    result = main(["--captions", str(finetuned), f"alt-text={vanilla}", "--references", "toyworld:train",
                   "--root", f"toyworld={tmp_path / 'world'}", "--output_dir", str(tmp_path / "out")])
    stats = result["statistics"]
    assert list(stats) == ["finetuned", "alt-text", HUMAN]
    assert stats["finetuned"] == {"captions": 3, "mean_length": 4.0, "vocabulary": 7, "unique_share": 1.0,
                                  "novel_share": pytest.approx(2 / 3)}  # "a small blue circle" is a reference
    assert stats["alt-text"]["mean_length"] == pytest.approx(13 / 3) and stats["alt-text"]["unique_share"] == 2 / 3
    assert stats["alt-text"]["novel_share"] == 1.0 and stats[HUMAN]["novel_share"] == 0.0
    nouns = {source: [lemma for lemma, _, _ in ranked] for source, ranked in result["nouns"].items()}
    adjectives = {source: [lemma for lemma, _, _ in ranked] for source, ranked in result["adjectives"].items()}
    assert "shape" in nouns["alt-text"] and "shapes" not in nouns["alt-text"]  # lemmas, not word forms
    assert {"top", "left"} & set(nouns[HUMAN]) and "circle" not in nouns["alt-text"]
    assert "geometric" in adjectives["alt-text"]
    assert {"small", "blue"} <= set(adjectives["finetuned"]) and {"small", "blue"} <= set(adjectives[HUMAN])
    table = (tmp_path / "out" / "analysis.md").read_text()
    assert "| adjectives | finetuned | alt-text | Human captions |" in table and "| 1 |" in table
    assert json.loads((tmp_path / "out" / "analysis.json").read_text())["pipeline"].startswith("en_core_web_sm")


def test_missing_pipeline_and_bad_files_give_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"spaCy pipeline 'no_such_pipeline' is not installed: pip install "
                                         r"'egg-zoo-discritune\[analyse\]'"):
        load_pipeline("no_such_pipeline")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "fine"}\n{"image_id": 2}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: expected a JSON object with a 'caption' string"):
        main(["--captions", str(bad), "--output_dir", str(tmp_path / "out")])
    bad.write_text('{"caption": "fine"}\n')
    with pytest.raises(ValueError, match="bad.jsonl: a line without 'references' for the human captions"):
        main(["--captions", str(bad), "--output_dir", str(tmp_path / "out")])
