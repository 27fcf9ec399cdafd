"""bench/length_breakdown.py: every line lands in exactly one length bucket."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "length_breakdown.py"


def _module():
    spec = importlib.util.spec_from_file_location("length_breakdown", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_line_is_scored_in_the_bucket_of_its_source_length():
    sources = [" ".join(["w"] * n) for n in (1, 10, 11, 20, 21, 40, 41, 90)]
    references = [f"the reference of line {i} here" for i in range(len(sources))]
    hypotheses = list(references)  # perfect translations: BLEU 100 in every bucket that has lines
    rows = _module().by_length(sources, hypotheses, references)
    assert [(row["words"], row["lines"]) for row in rows] == [("1-10", 2), ("11-20", 2), ("21-40", 2), ("40+", 2)]
    assert all(row["bleu"] == 100.0 for row in rows)
