"""Translation from whatever language a text is in, into one language: `mt translate --to LANG`.

Each text (an argument, an input line) is placed among LANG and the source languages
of the models that translate into LANG (mt.detect), and translated by the models of
its language; a text already in LANG, or without letters, comes back as it is.
Checkpoints of one direction make an ensemble, as they do without --to. A text in a
language no model reads is taken for the nearest one that some model does, as
LibreTranslate's "auto" does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mt.checkpoint import read_info
from mt.config import DecodeConfig, MTError
from mt.detect import detect
from mt.files import DEFAULT_MODEL
from mt.tokenizer import TokenizerPair
from mt.translator import Alignment, Candidate, Translator

# The shipped model of each direction (also what `mt serve` loads by default).
SHIPPED_DIRECTIONS = (DEFAULT_MODEL, DEFAULT_MODEL.parent / "en-de")


class AutoSourceTranslator:
    """A translator per source language, all into `target_language`, and the detection
    that picks one for each text; it answers what `mt translate` asks a `Translator`."""

    def __init__(self, target_language: str, translators: dict[str, Translator]):
        self.target_language = target_language
        self.translators = translators  # source language -> its translator
        self.languages = [target_language, *translators]  # the target first: a text without letters stays

    def source_language(self, text: str) -> str:
        return detect(text, self.languages)[0][0]

    def translate_n_best(
        self, texts: Sequence[str], decode: DecodeConfig, n_best: int = 1, split: bool = False
    ) -> list[list[Candidate]]:
        """As `Translator.translate_n_best`; a text in the target language is its own
        one candidate, scored 0 (a log-probability of 1)."""
        languages = [self.source_language(text) for text in texts]
        results = [[Candidate(text, 0.0)] for text in texts]
        for language, translator in self.translators.items():
            chosen = [i for i, found in enumerate(languages) if found == language]
            found = translator.translate_n_best([texts[i] for i in chosen], decode, n_best, split) if chosen else []
            for i, candidates in zip(chosen, found):
                results[i] = candidates
        return results

    def translate(self, texts: Sequence[str], decode: DecodeConfig, split: bool = False) -> list[str]:
        return [candidates[0].text for candidates in self.translate_n_best(texts, decode, split=split)]

    def alignment(self, source: str, translation: str) -> Alignment | None:
        """The attention of the model that translated `source`; None for a text left as it was."""
        translator = self.translators.get(self.source_language(source))
        return translator.alignment(source, translation) if translator is not None else None

    @property
    def has_attention(self) -> bool:
        return all(translator.has_attention for translator in self.translators.values())

    @property
    def tokenizers(self) -> TokenizerPair:
        """The first model's (the interactive prompt names its vocabulary size)."""
        return next(iter(self.translators.values())).tokenizers


def load_translator(
    paths: Sequence[Path] | None,
    device: torch.device | str = "cpu",
    quantize: bool | None = None,
    into: str | None = None,
) -> Translator | AutoSourceTranslator:
    """The translator of `mt translate`'s options: the one of `paths` (the shipped de-en
    by default); with `into`, one per source language of those of `paths` (by default
    the shipped models) that translate into `into`, picked by detection."""
    if into is None:
        return Translator.from_checkpoints(paths or [DEFAULT_MODEL], device, quantize)
    groups: dict[str, list[Path]] = {}  # source language -> its checkpoints
    directions = []
    for path in paths or SHIPPED_DIRECTIONS:
        info = read_info(path)
        source, target = info.get("source_language"), info.get("target_language")
        directions.append(f"{source or '?'}->{target or '?'}")
        if source and target and target.lower() == into.lower() and source.lower() != into.lower():
            groups.setdefault(source, []).append(path)
    if not groups:
        found = ", ".join(dict.fromkeys(directions))
        raise MTError(f"--to {into}: no model translates into {into} (the models translate {found})")
    translators = {source: Translator.from_checkpoints(group, device, quantize) for source, group in groups.items()}
    return AutoSourceTranslator(into, translators)
