"""Scoring translations with sacreBLEU: corpus scores, confidence intervals, paired tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The metrics that get confidence intervals and paired tests, by our names.
TESTED = ("bleu", "chrf", "ter")


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Cased BLEU (13a), lowercased BLEU, chrF and TER, each with its sacreBLEU signature."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    refs = [list(references)]
    metrics = {"bleu": BLEU(), "bleu_lowercase": BLEU(lowercase=True), "chrf": CHRF(), "ter": TER()}
    results: dict[str, Any] = {}
    for name, metric in metrics.items():
        results[name] = round(metric.corpus_score(list(hypotheses), refs).score, 2)
        results[f"{name}_signature"] = str(metric.get_signature())
    return results


def significance(systems: Sequence[Sequence[str]], references: Sequence[str], test: str = "bs") -> dict[str, Any]:
    """How sure the scores of `systems` (each a list of hypotheses) are. For each
    system, an entry of "systems": the bootstrap 95% confidence interval of BLEU,
    chrF and TER (mean +- ci) and, for every system after the first, the
    p-value of its difference from the first, by paired bootstrap resampling (`test="bs"`) or
    approximate randomization (`"ar"`; Riezler and Maxwell 2005), with sacreBLEU's
    1,000 resamples or 10,000 trials and its seed (SACREBLEU_SEED, 12345): a run
    repeats exactly."""
    from sacrebleu.metrics import BLEU, CHRF, TER
    from sacrebleu.significance import PairedTest

    named = [(str(index), list(hypotheses)) for index, hypotheses in enumerate(systems)]
    paired = PairedTest(
        named, {"bleu": BLEU(), "chrf": CHRF(), "ter": TER()}, [list(references)], test, n_ar_confidence=0
    )
    signatures, table = paired()
    columns = [column for column in table if column != "System"]  # sacreBLEU's names: BLEU, chrF2, TER
    results: list[dict[str, Any]] = [{} for _ in systems]
    for name, column in zip(TESTED, columns):
        for result, row in zip(results, table[column]):
            # sacreBLEU's interval: mean +- ci, ci half the distance between the 2.5th and 97.5th percentile
            result[name] = {"mean": round(float(row.mean), 2), "ci": round(float(row.ci), 2)}
            if row.p_value is not None:
                result[name]["p_value"] = round(float(row.p_value), 4)
    return {
        "test": test,
        "signatures": {name: str(signatures[column]) for name, column in zip(TESTED, columns)},
        "systems": results,
    }


def report(
    systems: Sequence[Sequence[str]],
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[str],
    test: str,
    confidence: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The scores of `mt evaluate`: one result per system (`systems`: each one's model
    paths, an ensemble when several) with its scores and, when `confidence` or several
    systems are compared, its confidence intervals; and `significance`'s record (or None)."""
    results = [
        {
            "model": str(paths[0]),
            **({"ensemble": [str(p) for p in paths]} if len(paths) > 1 else {}),
            **score(h, references),
        }
        for paths, h in zip(systems, hypotheses)
    ]
    tested = significance(hypotheses, references, test) if confidence or len(systems) > 1 else None
    if tested is not None:
        for result, intervals in zip(results, tested["systems"]):
            result.update({f"{name}_confidence": interval for name, interval in intervals.items()})
    return results, tested


def json_report(results: list[dict[str, Any]], tested: dict[str, Any] | None, settings: dict[str, Any]) -> dict:
    """`mt evaluate --json`: one model's result with the `settings` that made it, or the
    settings, the paired test and every system's result; with the test's signatures."""
    if len(results) == 1:
        body = {**results[0], **settings}
    else:
        body = {**settings, "paired_test": tested["test"], "baseline": results[0]["model"], "systems": results}
    if tested is not None:
        body["confidence_signatures"] = tested["signatures"]
    return body
