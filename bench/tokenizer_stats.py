"""How tokenizers cut text: pieces per word, and the training pairs that a length
limit would drop, per corpus (issue 27: the joint 8,000 against 16,000 pieces).

    python bench/tokenizer_stats.py --tokenizer checkpoints/de-en --tokenizer /work/runs/tok-general-8000 \
        --corpus data/news/newstest2012 --corpus data/general/news/train --src de --tgt en

A --tokenizer is a tokenizer directory (mt train-tokenizer) or a model (its tokenizer). Prints a
Markdown table: for each tokenizer and corpus, source and target pieces per word (whitespace-separated),
and the share of pairs of which either side has more than --max-length pieces (mt train drops them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mt.checkpoint import load_checkpoint
from mt.data import load_corpus
from mt.tokenizer import TokenizerPair


def load_tokenizers(path: Path) -> TokenizerPair:
    return TokenizerPair.load(path) if (path / "source.model").is_file() else load_checkpoint(path).tokenizers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, action="append", required=True)
    parser.add_argument("--corpus", action="append", required=True)
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--max-length", type=int, default=100)
    args = parser.parse_args()

    corpora = {spec: load_corpus(spec, args.src, args.tgt) for spec in args.corpus}
    print(
        f"| tokenizer | corpus | pairs | {args.src} pieces/word | {args.tgt} pieces/word | pairs over {args.max_length} pieces |"
    )
    print("|---|---|---|---|---|---|")
    for path in args.tokenizer:
        tokenizers = load_tokenizers(path)
        for spec, corpus in corpora.items():
            sources, targets = corpus["source"], corpus["target"]
            source_ids, target_ids = tokenizers.source.encode(sources), tokenizers.target.encode(targets)
            words = [sum(len(text.split()) for text in side) for side in (sources, targets)]
            pieces = [sum(map(len, side)) for side in (source_ids, target_ids)]
            over = sum(max(len(s), len(t)) > args.max_length for s, t in zip(source_ids, target_ids))
            print(
                f"| {path} ({tokenizers.source.vocab_size:,}) | {spec} | {len(sources):,} "
                f"| {pieces[0] / words[0]:.2f} | {pieces[1] / words[1]:.2f} | {over / len(sources):.2%} |"
            )


if __name__ == "__main__":
    main()
