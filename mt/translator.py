"""Text in, text out: a model and its tokenizers on one device.

A text may hold several sentences. With `split=True` it is cut into sentences
(sentencex, by the source language), every sentence of every text is
translated in one batched search, and each text is put back together with the
whitespace it had between its sentences. A sentence longer than the model
reads well (`max_tokens` subwords: by default the longest pair it was trained
on) is cut at clause boundaries, else between words, and translated piece by
piece: nothing the user typed is dropped. A sentence without letters (a number,
an emoji) comes back as it is.

Threads: a Translator keeps no state between calls, but each call puts the
model in eval mode. Call it from one thread at a time (the server runs one
call per model at a time) and not while the same process trains the same model
in another thread. Commands that translate set the process up for it first
(`mt.runtime.for_inference`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from mt.checkpoint import load_checkpoint
from mt.config import DecodeConfig, MTError
from mt.data import make_batches, source_tensors
from mt.model import Ensemble, Seq2Seq
from mt.quantize import Int8Linear, int8_by_default, quantize_int8
from mt.search import search
from mt.tokenizer import TokenizerPair

# Where a too-long sentence may be cut: after clause punctuation, else between words.
CLAUSE_BOUNDARY = re.compile(r"[,;:–—]\s+")
WORD_BOUNDARY = re.compile(r"\s+")


@dataclass(frozen=True)
class Candidate:
    text: str
    score: float  # length-penalised log-probability (summed over a text's sentences)


class Alignment(NamedTuple):
    """The attention of a translation over its source: weights[t, s] for target piece t, source piece s."""

    source: list[str]
    target: list[str]
    weights: torch.Tensor  # (T, S)

    def to_dict(self) -> dict:
        """The JSON form (of the server and `--format jsonl`): weights rounded to 4 decimals."""
        rows = self.weights.double().round(decimals=4).tolist()
        return {"source": self.source, "target": self.target, "weights": rows}


@dataclass(frozen=True)
class Segment:
    """A sentence (or a piece of one) and the whitespace around it in its text."""

    before: str
    text: str
    after: str

    @classmethod
    def of(cls, piece: str) -> Segment:
        text = piece.strip()
        start = len(piece) - len(piece.lstrip())
        return cls(piece[:start], text, piece[start + len(text) :])


def split_sentences(text: str, language: str) -> list[str]:
    """`text` cut into sentences, each with the whitespace after it: the pieces
    concatenate to `text` exactly ("z. B.", "Dr.", "3.5 Mio." do not end one)."""
    from sentencex import segment

    pieces = [piece for piece in segment(language, text) if piece]
    return pieces if "".join(pieces) == text else [text]


def _cut_after(text: str, boundary: re.Pattern) -> list[str]:
    """`text` cut after each match of `boundary`; the pieces concatenate to `text`."""
    ends = [match.end() for match in boundary.finditer(text) if 0 < match.end() < len(text)]
    return [text[start:end] for start, end in zip([0, *ends], [*ends, len(text)])]


def _has_letters(text: str) -> bool:
    return any(character.isalpha() for character in text)


def _direction(info: dict) -> str:
    """A checkpoint's direction, "de->en" ("?" for a language its record does not give)."""
    return f"{info.get('source_language') or '?'}->{info.get('target_language') or '?'}"


def _distinct(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates with each text once, at its best (first) place."""
    first: dict[str, Candidate] = {}
    for candidate in candidates:
        first.setdefault(candidate.text, candidate)
    return list(first.values())


class Translator:
    """A model and its tokenizers on one device.

    Sentences are sorted by length and searched in batches of about
    `batch_tokens` source tokens, counting each sentence once per beam (its
    beams are rows of the batch); the output keeps the input's order. An
    empty or whitespace-only text translates to an empty text.
    """

    def __init__(
        self,
        model: Seq2Seq | Ensemble,
        tokenizers: TokenizerPair,
        device: torch.device | str = "cpu",
        batch_tokens: int = 6000,
        source_language: str = "en",
        max_tokens: int | None = None,
    ):
        self.model = model
        self.tokenizers = tokenizers
        self.device = torch.device(device)
        self.batch_tokens = batch_tokens
        self.source_language = source_language
        limit = model.config.max_source_length - 1  # one position is eos
        self.max_tokens = min(max_tokens or limit, limit)

    @classmethod
    def from_checkpoint(
        cls, path: Path, device: torch.device | str = "cpu", quantize: bool | None = None
    ) -> Translator:
        """The translator of a checkpoint file or directory; `quantize`: int8 weights (CPU only),
        by default on x86 CPUs (`mt.quantize.int8_by_default`)."""
        return cls.from_checkpoints([path], device, quantize)

    @classmethod
    def from_checkpoints(
        cls, paths: Sequence[Path], device: torch.device | str = "cpu", quantize: bool | None = None
    ) -> Translator:
        """One checkpoint's translator, or an ensemble of several that share one tokenizer
        (each step averages their log-probabilities); the first one's record sets the
        source language and the length limit."""
        device = torch.device(device)
        if quantize is None:
            quantize = int8_by_default(device)
        if quantize and device.type != "cpu":
            raise MTError(f"--quantize runs on the CPU only; add --device cpu (the model would run on {device.type})")
        checkpoints = [load_checkpoint(path, device) for path in paths]
        first = checkpoints[0]
        for path, checkpoint in zip(paths[1:], checkpoints[1:]):
            if (checkpoint.tokenizers.source.model_proto, checkpoint.tokenizers.target.model_proto) != (
                first.tokenizers.source.model_proto,
                first.tokenizers.target.model_proto,
            ):
                raise MTError(
                    f"{path} has another tokenizer than {paths[0]}; the models of an ensemble must share one vocabulary"
                )
            if _direction(checkpoint.info) != _direction(first.info):
                raise MTError(
                    f"{path} translates {_direction(checkpoint.info)} but {paths[0]} translates "
                    f"{_direction(first.info)}; the models of an ensemble must translate one direction"
                )
        models = [quantize_int8(c.model) if quantize else c.model for c in checkpoints]
        info = first.info
        return cls(
            models[0] if len(models) == 1 else Ensemble(models),
            first.tokenizers,
            device,
            source_language=info.get("source_language") or "en",
            max_tokens=(info.get("train_config") or {}).get("max_length"),
        )

    @property
    def int8(self) -> bool:
        """Whether the model runs in int8 (`mt.quantize`)."""
        return any(isinstance(module, Int8Linear) for module in self.model.modules())

    # -- texts -> segments -------------------------------------------------

    def _length(self, text: str) -> int:
        return len(self.tokenizers.source.encode([text])[0])

    def _fit(self, piece: str) -> list[str]:
        """`piece` cut into pieces of at most `max_tokens` subwords each (they concatenate to it)."""
        if len(piece) <= 1 or self._length(piece) <= self.max_tokens:
            return [piece]
        for boundary in (CLAUSE_BOUNDARY, WORD_BOUNDARY):
            parts = _cut_after(piece, boundary)
            if len(parts) > 1:
                return [fitted for packed in self._pack(parts) for fitted in self._fit(packed)]
        half = len(piece) // 2  # one "word" longer than the limit: halve it
        return self._fit(piece[:half]) + self._fit(piece[half:])

    def _pack(self, parts: list[str]) -> list[str]:
        """Consecutive parts joined greedily while the join fits in `max_tokens`."""
        packed, current = [], ""
        for part in parts:
            if current and self._length(current + part) > self.max_tokens:
                packed.append(current)
                current = ""
            current += part
        return [*packed, current]

    def _segments(self, text: str, split: bool) -> list[Segment]:
        sentences = split_sentences(text, self.source_language) if split and text.strip() else [text]
        return [Segment.of(piece) for sentence in sentences for piece in self._fit(sentence)]

    # -- translation -------------------------------------------------------

    @torch.inference_mode()
    def _search(self, sentences: Sequence[str], decode: DecodeConfig, n_best: int) -> list[list[Candidate]]:
        """The n best translations of each sentence (each fits in `max_tokens`). A
        sentence without letters (numbers, emoji, punctuation) is its own translation."""
        encoded = self.tokenizers.source.encode(list(sentences))
        results = [[Candidate("" if _has_letters(s) else s, 0.0)] for s in sentences]
        nonempty = [i for i, ids in enumerate(encoded) if ids and _has_letters(sentences[i])]
        lengths = [len(encoded[i]) + 1 for i in nonempty]
        pad_id, eos_id = self.model.config.pad_id, self.model.config.eos_id
        was_training = self.model.training
        self.model.eval()
        rows_per_sentence = n_best if decode.sampling else decode.beam_size
        # A beam search keeps its K best; subword paths that decode alike count once.
        wanted = n_best if decode.sampling else max(n_best, decode.beam_size)
        for batch in make_batches(lengths, max(1, self.batch_tokens // rows_per_sentence)):
            indices = [nonempty[j] for j in batch.tolist()]
            source, source_lengths = source_tensors([encoded[i] for i in indices], pad_id, eos_id)
            hypotheses = search(self.model, source.to(self.device), source_lengths.to(self.device), decode, wanted)
            for index, hyps in zip(indices, hypotheses):
                texts = self.tokenizers.target.decode([h.tokens for h in hyps])
                found = [Candidate(text, h.score) for text, h in zip(texts, hyps)]
                results[index] = found if decode.sampling else _distinct(found)[:n_best]
        self.model.train(was_training)
        return results

    def translate_n_best(
        self, texts: Sequence[str], decode: DecodeConfig, n_best: int = 1, split: bool = False
    ) -> list[list[Candidate]]:
        """The `n_best` best translations of each text, best first. With `split`,
        each text is translated sentence by sentence; its k-th candidate joins
        the k-th best of every sentence (or the sentence's last, if it has fewer)
        and scores their sum."""
        segmented = [self._segments(text, split) for text in texts]
        flat = self._search([segment.text for segments in segmented for segment in segments], decode, n_best)
        results, position = [], 0
        for segments in segmented:
            found = flat[position : position + len(segments)]
            position += len(segments)
            candidates = []
            for rank in range(max(len(options) for options in found)):
                chosen = [options[min(rank, len(options) - 1)] for options in found]
                text = "".join(s.before + c.text + s.after for s, c in zip(segments, chosen))
                candidates.append(Candidate(text.strip() if len(segments) == 1 else text, sum(c.score for c in chosen)))
            results.append(candidates if decode.sampling else _distinct(candidates))
        return results

    def translate(self, texts: Sequence[str], decode: DecodeConfig, split: bool = False) -> list[str]:
        return [candidates[0].text for candidates in self.translate_n_best(texts, decode, split=split)]

    @property
    def _aligner(self) -> Seq2Seq:
        """The model whose attention `alignment` shows: the model, or an ensemble's first."""
        return self.model.members[0] if isinstance(self.model, Ensemble) else self.model

    @property
    def has_attention(self) -> bool:
        return self._aligner.decoder.attention is not None

    @torch.inference_mode()
    def alignment(self, source: str, translation: str) -> Alignment | None:
        """Source pieces, target pieces and the attention weights (T, S) the
        model gives `translation` when forced to produce it (of the first
        `max_tokens` source pieces); None without attention."""
        model = self._aligner
        if not self.has_attention or not source.strip():
            return None
        config = model.config
        source_ids = self.tokenizers.source.encode([source.strip()])[0][: self.max_tokens]
        target_ids = self.tokenizers.target.encode([translation])[0]
        padded, lengths = source_tensors([source_ids], config.pad_id, config.eos_id)
        target_in = torch.tensor([[config.bos_id, *target_ids]], device=self.device)
        was_training = model.training
        model.eval()
        _, attention = model(padded.to(self.device), lengths.to(self.device), target_in)
        model.train(was_training)
        source_pieces = [*self.tokenizers.source.pieces(source.strip())[: len(source_ids)], "</s>"]
        target_pieces = [*self.tokenizers.target.pieces(translation), "</s>"][: target_in.size(1)]
        return Alignment(source_pieces, target_pieces, attention[0, : len(target_pieces)].cpu())
