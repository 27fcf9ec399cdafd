"""What a vocabulary shortlist would buy: beam 5 on test2016 with the output layer cut
to the target pieces a batch's sources can plausibly produce (as Marian and Bergamot do).

A lexical table is counted from the training corpora: for each source piece, the
`--per-source` target pieces that share sentence pairs with it most specifically
(Dice coefficient); with them, the `--frequent` most common target pieces. A batch's shortlist is the union over its sentences' pieces.
The decoder then computes logits for the shortlist only (its weight rows gathered
once per batch); every other piece gets log-probability -inf. This is a
measurement, not a feature of mt: the shortlist of a batch depends on all of
its sentences, so a sentence's translation would depend on its batch mates.

    python bench/shortlist.py --train data/tatoeba/deu-eng/train --train data/multi30k/train
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None)


def lexical_table(pairs: list[tuple[list[int], list[int]]], vocab: int, per_source: int) -> torch.Tensor:
    """(V_src, per_source) target ids: for each source piece s, the target pieces t with
    the highest Dice coefficient 2 c(s, t) / (c(s) + c(t)), where c counts sentence pairs
    that hold the pieces. (Raw co-occurrence would rank "the" and "." first for every s.)"""
    keys, source_seen, target_seen = [], [], []
    for source, target in pairs:
        s, t = np.unique(source), np.unique(target)
        keys.append((s[:, None] * vocab + t[None, :]).ravel())
        source_seen.append(s)
        target_seen.append(t)
    together = np.bincount(np.concatenate(keys), minlength=vocab * vocab).reshape(vocab, vocab)
    source_count = np.bincount(np.concatenate(source_seen), minlength=vocab)
    target_count = np.bincount(np.concatenate(target_seen), minlength=vocab)
    dice = 2 * together / np.maximum(source_count[:, None] + target_count[None, :], 1)
    return torch.from_numpy(np.argsort(-dice, axis=1, kind="stable")[:, :per_source].copy())


def restrict_output(model, table: torch.Tensor, frequent: torch.Tensor) -> dict:
    """Make `model.decode_step` compute logits over each batch's shortlist only; returns stats."""
    decoder, stats = model.decoder, {"shortlist_sizes": []}
    original_encode = model.encode
    vocab = model.config.tgt_vocab_size

    def encode(source, lengths):
        ids = torch.unique(torch.cat([table[source.unique()].ravel(), frequent]))
        ids = ids[ids < vocab]
        _, weight, bias = decoder.output_layer(torch.zeros(1, model.config.hidden_size))
        decoder.shortlist = (ids, weight.index_select(0, ids), None if bias is None else bias.index_select(0, ids))
        stats["shortlist_sizes"].append(int(ids.numel()))
        return original_encode(source, lengths)

    def logits(features):
        ids, weight, bias = decoder.shortlist
        inputs = decoder.output_layer(features)[0]
        full = inputs.new_full((*inputs.shape[:-1], vocab), float("-inf"))
        return full.index_copy_(-1, ids, torch.nn.functional.linear(inputs, weight, bias))

    model.encode, decoder.logits = encode, logits
    return stats


@app.command()
def main(
    train: Annotated[list[str], typer.Option(help="Training corpora (prefixes, as for mt train).")],
    model: Annotated[Path, typer.Option(help="The model.")] = Path("checkpoints/de-en"),
    test_src: Path = Path("data/multi30k/test_2016_flickr.de.gz"),
    test_ref: Path = Path("data/multi30k/test_2016_flickr.en.gz"),
    per_source: Annotated[int, typer.Option(help="Target pieces per source piece.")] = 30,
    frequent: Annotated[int, typer.Option(help="Most frequent target pieces always in.")] = 500,
) -> None:
    from mt.config import DecodeConfig
    from mt.data import load_corpus
    from mt.evaluate import score
    from mt.files import read_lines
    from mt.runtime import for_inference
    from mt.translator import Translator

    for_inference()  # as mt translate

    sources, references = read_lines(test_src), read_lines(test_ref)
    decode = DecodeConfig(beam_size=5)
    full = Translator.from_checkpoint(model)
    tokenizers, vocab = full.tokenizers, full.model.config.tgt_vocab_size
    started = time.perf_counter()
    pairs = []
    for prefix in train:
        corpus = load_corpus(prefix, "de", "en")
        encoded_src = tokenizers.source.encode(list(corpus["source"]))
        encoded_tgt = tokenizers.target.encode(list(corpus["target"]))
        pairs.extend(zip(encoded_src, encoded_tgt))
    table = lexical_table(pairs, vocab, per_source)
    counts = np.bincount(np.concatenate([np.asarray(t, dtype=np.int64) for _, t in pairs]), minlength=vocab)
    top = torch.from_numpy(np.argsort(-counts, kind="stable")[:frequent].copy())
    print(f"lexical table from {len(pairs):,} pairs in {time.perf_counter() - started:.0f} s")

    results = {}
    for name in ("full", "shortlist"):
        translator = Translator.from_checkpoint(model)
        stats = restrict_output(translator.model, table, top) if name == "shortlist" else None
        translator.translate(sources[:8], decode)  # warm-up
        started = time.perf_counter()
        hypotheses = translator.translate(sources, decode)
        seconds = time.perf_counter() - started
        results[name] = (seconds, score(hypotheses, references)["bleu"])
        extra = ""
        if stats:
            sizes = stats["shortlist_sizes"][1:]
            extra = f", shortlist {min(sizes)}–{max(sizes)} of {vocab} pieces over {len(sizes)} batches"
        print(f"{name}: {seconds:.1f} s, {len(sources) / seconds:.1f} sentences/s, BLEU {results[name][1]:.2f}{extra}")
    print(f"shortlist speed-up {results['full'][0] / results['shortlist'][0]:.2f}x")


if __name__ == "__main__":
    app()
