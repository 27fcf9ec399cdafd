"""Scoring translations with sacreBLEU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Cased BLEU (13a), lowercased BLEU and chrF, each with its sacreBLEU signature."""
    from sacrebleu.metrics import BLEU, CHRF

    refs = [list(references)]
    bleu, bleu_lc, chrf = BLEU(), BLEU(lowercase=True), CHRF()
    results: dict[str, Any] = {}
    for name, metric in (("bleu", bleu), ("bleu_lowercase", bleu_lc), ("chrf", chrf)):
        result = metric.corpus_score(list(hypotheses), refs)
        results[name] = round(result.score, 2)
        results[f"{name}_signature"] = str(metric.get_signature())
    return results
