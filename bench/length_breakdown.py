"""BLEU by source length: where a model is reliable. Translates a test set once (as
`mt evaluate` does: sentences split, the default precision) and scores the lines whose
source has 1-10, 11-20, 21-40 and more than 40 words, each as a corpus of its own.

    python bench/length_breakdown.py -m checkpoints/de-en --src data/news/newstest2013.de.gz --ref data/news/newstest2013.en.gz
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None)

BUCKETS = ((1, 10), (11, 20), (21, 40), (41, None))


def by_length(sources: list[str], hypotheses: list[str], references: list[str]) -> list[dict]:
    """One row per length bucket of the sources (in words): lines, BLEU, chrF."""
    from mt.evaluate import score

    rows = []
    for low, high in BUCKETS:
        chosen = [
            i for i, s in enumerate(sources) if low <= len(s.split()) and (high is None or len(s.split()) <= high)
        ]
        found = score([hypotheses[i] for i in chosen], [references[i] for i in chosen]) if chosen else None
        rows.append(
            {
                "words": f"{low}-{high}" if high else f"{low - 1}+",
                "lines": len(chosen),
                "bleu": found and found["bleu"],
                "chrf": found and found["chrf"],
            }
        )
    return rows


@app.command()
def main(
    model: Annotated[Path, typer.Option("--model", "-m")],
    src: Annotated[Path, typer.Option()],
    ref: Annotated[Path, typer.Option()],
    beam: Annotated[int, typer.Option()] = 5,
    quantize: Annotated[bool | None, typer.Option("--quantize/--no-quantize")] = None,
    hypotheses: Annotated[Path | None, typer.Option(help="Score these translations instead of translating.")] = None,
):
    from mt.config import DecodeConfig
    from mt.files import read_lines
    from mt.runtime import for_inference
    from mt.translator import Translator

    sources, references = read_lines(src), read_lines(ref)
    if hypotheses is not None:
        translations = read_lines(hypotheses)
    else:
        for_inference()
        translator = Translator.from_checkpoint(model, quantize=quantize)
        translations = translator.translate(sources, DecodeConfig(beam_size=beam), split=True)
    print("| source words | lines | BLEU | chrF |\n|---|---|---|---|")
    for row in by_length(sources, translations, references):
        print(f"| {row['words']} | {row['lines']} | {row['bleu']} | {row['chrf']} |")


if __name__ == "__main__":
    app()
