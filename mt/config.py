"""Typed, validated configuration: model, training and decoding.

Each config is a frozen dataclass. It is validated once, when it is built
(`__post_init__`), so inner code can trust it; a bad value raises `MTError`
with the valid range in the message. Model configs travel inside checkpoints
as JSON (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any


class MTError(Exception):
    """An error the user can cause and fix: printed by the CLI as one line."""


MAX_BEAM = 100  # wider beams cost memory (beam x vocabulary per sentence) and no longer gain BLEU


class Choice(str, Enum):
    """One of a fixed set of names. Compares equal to its name as a string and
    prints and serialises as it, so configs stored as JSON keep plain strings."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, name: str, value: Any) -> Choice:
        try:
            return cls(value)
        except ValueError:
            raise MTError(f"{name} must be one of {', '.join(c.value for c in cls)}; got {value!r}") from None


class Cell(Choice):
    """The recurrent cell."""

    lstm = "lstm"
    gru = "gru"
    rnn = "rnn"


class Device(Choice):
    """Where to run: auto picks CUDA when available (`mt.runtime.resolve_device`)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class CellImpl(Choice):
    """fused: torch's kernels; reference: the lecture's equations (mt.cells)."""

    fused = "fused"
    reference = "reference"


class AttentionKind(Choice):
    """none: the encoder's final state is all the decoder sees."""

    none = "none"
    bahdanau = "bahdanau"
    luong = "luong"


class SubwordModel(Choice):
    """SentencePiece's segmentation algorithm."""

    unigram = "unigram"
    bpe = "bpe"


class SignificanceTest(Choice):
    """sacreBLEU's paired tests: bootstrap resampling or approximate randomization."""

    bs = "bs"
    ar = "ar"


class OutputFormat(Choice):
    """What `mt translate` writes per input line: the translation, or one JSON object."""

    text = "text"
    jsonl = "jsonl"


def _check_range(name: str, value: float, low: float, high: float | None = None, *, low_open: bool = False) -> None:
    if not math.isfinite(value):
        raise MTError(f"{name} must be a finite number, got {value}")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        bound = f"> {low}" if low_open else f">= {low}"
        valid = f"{bound} and <= {high}" if high is not None else bound
        raise MTError(f"{name} must be {valid}, got {value}")


class _JSONConfig:
    """JSON round trip shared by the configs; unknown keys are an error."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        if not isinstance(values, dict):
            raise MTError(f"invalid {cls.__name__}: expected a JSON object, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise MTError(f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))}")
        try:
            return cls(**values)
        except TypeError as error:
            raise MTError(f"invalid {cls.__name__}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _check_types(self) -> None:
        """Each field holds its declared kind of value (a JSON file can say 512.0 or "2")."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = {"int": (int,), "float": (int, float), "bool": (bool,)}.get(field.type)
            if kind and (not isinstance(value, kind) or (isinstance(value, bool) and field.type != "bool")):
                raise MTError(f"{field.name} must be of type {field.type}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig(_JSONConfig):
    """The shape of an encoder-decoder. Stored inside every checkpoint.

    The defaults are the design's model (Sutskever et al. 2014): an LSTM
    encoder whose final state is the decoder's only view of the source, read
    in reverse order.
    """

    src_vocab_size: int
    tgt_vocab_size: int
    embedding_size: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.3
    cell: Cell = Cell.lstm
    cell_impl: CellImpl = CellImpl.fused
    attention: AttentionKind = AttentionKind.none
    bidirectional: bool = False
    reverse_source: bool = True
    tie_embeddings: bool = True
    share_embeddings: bool = False
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    max_source_length: int = 256

    def __post_init__(self) -> None:
        # Upper bounds too: a checkpoint's header must not make the loader allocate terabytes.
        self._check_types()
        _check_range("src_vocab_size", self.src_vocab_size, 8, 1_000_000)
        _check_range("tgt_vocab_size", self.tgt_vocab_size, 8, 1_000_000)
        _check_range("embedding_size", self.embedding_size, 1, 8192)
        _check_range("hidden_size", self.hidden_size, 2, 16384)
        _check_range("num_layers", self.num_layers, 1, 64)
        _check_range("dropout", self.dropout, 0.0, 0.9)
        _check_range("max_source_length", self.max_source_length, 1, 100_000)
        for name in ("pad_id", "bos_id", "eos_id"):
            _check_range(name, getattr(self, name), 0, min(self.src_vocab_size, self.tgt_vocab_size) - 1)
        for name, kind in (("cell", Cell), ("cell_impl", CellImpl), ("attention", AttentionKind)):
            object.__setattr__(self, name, kind.parse(name, getattr(self, name)))
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise MTError("share_embeddings needs one joint vocabulary (train the tokenizer with --joint)")
        if self.bidirectional and self.hidden_size % 2:
            raise MTError("hidden_size must be even for a bidirectional encoder (each direction gets half)")


@dataclass(frozen=True)
class TrainConfig(_JSONConfig):
    """How to train: optimisation, batching, validation and stopping."""

    batch_tokens: int = 4096
    accumulate: int = 1  # batches per worker per update (gradient accumulation)
    learning_rate: float = 1e-3
    clip_norm: float = 1.0
    label_smoothing: float = 0.1
    max_epochs: int = 30
    max_steps: int = 0
    validate_every: int = 0
    patience: int = 5
    lr_patience: int = 2
    lr_decay: float = 0.5
    warmup_steps: int = 0
    max_length: int = 100
    seed: int = 1
    validation_beam: int = 1
    max_bad_steps: int = 20
    max_minutes: float = 0.0
    keep_checkpoints: int = 0
    bf16: bool = False  # bf16 autocast for the forward pass and loss
    compile: bool = False  # torch.compile the attention decoder's step (`Decoder.compile_step`)

    def __post_init__(self) -> None:
        self._check_types()
        _check_range("batch_tokens", self.batch_tokens, 1)
        _check_range("accumulate", self.accumulate, 1)
        _check_range("learning_rate", self.learning_rate, 0.0, low_open=True)
        _check_range("clip_norm", self.clip_norm, 0.0, low_open=True)
        _check_range("label_smoothing", self.label_smoothing, 0.0, 0.99)
        _check_range("max_epochs", self.max_epochs, 1)
        _check_range("max_steps", self.max_steps, 0)
        _check_range("validate_every", self.validate_every, 0)
        _check_range("patience", self.patience, 0)
        _check_range("lr_patience", self.lr_patience, 0)
        _check_range("lr_decay", self.lr_decay, 0.0, 1.0, low_open=True)
        _check_range("warmup_steps", self.warmup_steps, 0)
        _check_range("max_length", self.max_length, 1)
        _check_range("validation_beam", self.validation_beam, 1)
        _check_range("max_bad_steps", self.max_bad_steps, 1)
        _check_range("max_minutes", self.max_minutes, 0.0)
        _check_range("keep_checkpoints", self.keep_checkpoints, 0)


@dataclass(frozen=True)
class RunConfig:
    """What a training run reads and where it writes: the training corpora (specs,
    `PATH:N` to take one N times per epoch), the validation sets, the languages, the
    tokenizer directory or the model to fine-tune (`init_from`), and the run directory."""

    train: tuple[str, ...] = ("data/multi30k/train",)
    valid: tuple[str, ...] = ("data/multi30k/val",)
    src: str = "de"
    tgt: str = "en"
    tokenizer: Path | None = None  # data/tokenizers/SRC-TGT when None
    init_from: Path | None = None
    output: Path | None = None  # runs/SRC-TGT when None
    overwrite: bool = False  # start afresh: delete the run's own checkpoints and log

    def __post_init__(self) -> None:
        if self.init_from is not None and self.tokenizer is not None:
            raise MTError("--tokenizer cannot be combined with --init-from: the model keeps its checkpoint's tokenizer")
        for name, specs in (("--train", self.train), ("--valid", self.valid)):
            if len(set(specs)) < len(specs):
                raise MTError(f"{name}: the same corpus is given twice; use PATH:N to weight a training corpus")

    @property
    def tokenizer_dir(self) -> Path:
        return self.tokenizer or Path("data/tokenizers") / f"{self.src}-{self.tgt}"

    @property
    def run_dir(self) -> Path:
        return self.output or Path("runs") / f"{self.src}-{self.tgt}"


@dataclass(frozen=True)
class DecodeConfig(_JSONConfig):
    """How to search: beam size (or sampling), length penalty and the output length limit.

    The output may be at most `max_length_ratio * source_length +
    max_length_offset` tokens long.
    """

    beam_size: int = 5
    length_penalty: float = 1.0
    max_length_ratio: float = 1.5
    max_length_offset: int = 10
    sampling: bool = False  # sample instead of searching; the knobs below shape the distribution
    temperature: float = 1.0
    top_k: int = 0  # 0: every token
    top_p: float = 1.0
    seed: int = 1

    def __post_init__(self) -> None:
        self._check_types()
        _check_range("beam_size", self.beam_size, 1, MAX_BEAM)
        _check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        _check_range("top_k", self.top_k, 0)
        _check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _check_range("length_penalty", self.length_penalty, 0.0, 5.0)
        _check_range("max_length_ratio", self.max_length_ratio, 0.0, low_open=True)
        _check_range("max_length_offset", self.max_length_offset, 0)

    def check_n_best(self, n_best: int) -> None:
        """How many candidates a search can give: up to the beam, or any number of samples."""
        most = MAX_BEAM if self.sampling else self.beam_size
        if not 1 <= n_best <= most:
            bound = str(MAX_BEAM) if self.sampling else f"--beam ({self.beam_size})"
            raise MTError(f"--n-best must be between 1 and {bound}, got {n_best}")
