import os

import pytest
import torch

from egg_zoo_discritune.metrics import nlg
from egg_zoo_discritune.metrics.retrieval import precision_at_1, recall_at_k


def dot(text, image):
    return text @ image.t()


def test_precision_at_1_equals_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(250, 8, generator=g)
    texts = images + 1.5 * torch.randn(250, 8, generator=g)
    result = precision_at_1(texts, images, dot, block_size=100)
    hits = 0
    for i in range(200):
        start = i // 100 * 100
        scores = [float(texts[i] @ images[j]) for j in range(start, start + 100)]
        hits += scores[i - start] == max(scores)
    assert result == {"p_at_1": hits / 200, "n_blocks": 2, "n_dropped": 50}
    assert 0.05 < result["p_at_1"] < 0.95
    with pytest.raises(ValueError, match="fewer than one block"):
        precision_at_1(texts[:50], images[:50], dot)


def test_recall_at_k_equals_a_full_ranking():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(300, 8, generator=g)
    texts = images + 2.0 * torch.randn(300, 8, generator=g)
    result = recall_at_k(texts, images, dot, ks=(1, 5), chunk=64)
    order = (texts @ images.t()).argsort(dim=1, descending=True)
    position = (order == torch.arange(300).unsqueeze(1)).float().argmax(dim=1)
    assert result["recall_at_1"] == pytest.approx((position < 1).float().mean().item())
    assert result["recall_at_5"] == pytest.approx((position < 5).float().mean().item())


REFS = {"1": ["A red circle on a gray background.", "a circle that is red"],
        "2": ["A blue square.", "blue square shape on gray"], "3": ["a small green triangle", "green shape"]}
HYPS = {"1": "a red circle.", "2": "a blue square on a gray background", "3": "a green triangle"}


def test_nlg_scores_equal_pycocoevalcap_scorers(tmp_path):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    scores = nlg.caption_metrics({**REFS, "4": []}, {**HYPS, "4": "no reference"}, spice_jars=str(tmp_path))
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in REFS.items()})
    res = tokenizer.tokenize({i: [{"caption": h}] for i, h in HYPS.items()})
    assert scores["bleu_4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert scores["meteor"] == pytest.approx(Meteor().compute_score(gts, res)[0])
    assert scores["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert scores["cider"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert scores["n_scored"] == 3 and scores["cider"] > 0
    assert scores["spice"].startswith("not available: Stanford CoreNLP 3.6.0 jars not found")


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(nlg.JavaNotFoundError, match="need Java"):
        nlg.caption_metrics(REFS, HYPS)


def test_spice_jars_found_in_a_given_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SPICE_CORENLP_DIR", raising=False)
    for jar in nlg.CORENLP_JARS:
        (tmp_path / jar).write_bytes(b"")
    assert nlg.find_corenlp_jars(str(tmp_path)) == (tmp_path, "")
    monkeypatch.setenv("SPICE_CORENLP_DIR", os.fspath(tmp_path))
    assert nlg.find_corenlp_jars() == (tmp_path, "")
