"""Local mutual information (Evert 2005), as the paper's Table 7 uses it: how strongly a lemma is tied to
one caption source. Over the lemma x source contingency table of counts O, with E = row total x column
total / N the count expected if lemma and source were independent, LMI = O * log2(O / E). Unlike PMI it
weighs the association by the count, so one-off lemmas do not top the list."""

from __future__ import annotations

import math
from collections import Counter
from typing import Mapping


def local_mutual_information(counts: Mapping[str, Counter], top: int = 10) -> dict[str, list[tuple[str, float, int]]]:
    """Per source, its ``top`` lemmas by LMI as ``(lemma, lmi, count)``, strongest first; only lemmas that
    the source uses more often than expected (LMI > 0). Ties: the more frequent lemma, then alphabetical."""
    lemma_totals = Counter()
    for source_counts in counts.values():
        lemma_totals.update(source_counts)
    n = sum(lemma_totals.values())
    ranked = {}
    for source, source_counts in counts.items():
        source_total = sum(source_counts.values())
        scores = []
        for lemma, observed in source_counts.items():
            if observed <= 0:
                continue
            expected = lemma_totals[lemma] * source_total / n
            lmi = observed * math.log2(observed / expected)
            if lmi > 0:
                scores.append((lemma, lmi, observed))
        ranked[source] = sorted(scores, key=lambda s: (-s[1], -s[2], s[0]))[:top]
    return ranked
