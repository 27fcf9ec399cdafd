"""Shared fixtures: a toy German-English corpus made here, a joint tokenizer
trained on it, and tiny models of every architecture.

Everything is built by the tests themselves (no network, no ../shared data)
and kept small, so that the whole suite runs on a CPU in seconds.
"""

from __future__ import annotations

import atexit
import gzip
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "HF_DATASETS_CACHE" not in os.environ:  # corpora read by the tests are cached here, not in ~/.cache
    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="mt-tests-datasets-")
    atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True)
# torch.compile's cache (the --compile tests), one per ATEN_CPU_CAPABILITY: Inductor keys its
# precompiled header without it, and a run under another capability fails to build against it.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"mt-tests-inductor-{os.environ.get('ATEN_CPU_CAPABILITY', 'native')}"),
)

from mt.checkpoint import save_checkpoint  # noqa: E402
from mt.config import AttentionKind, Cell, ModelConfig  # noqa: E402
from mt.model import Seq2Seq  # noqa: E402
from mt.tokenizer import TokenizerPair, train_sentencepiece  # noqa: E402

# (German article, singular, English singular, German plural, English plural)
ANIMALS = [
    ("der", "Hund", "dog", "Hunde", "dogs"),
    ("die", "Katze", "cat", "Katzen", "cats"),
    ("das", "Pferd", "horse", "Pferde", "horses"),
    ("der", "Vogel", "bird", "Vögel", "birds"),
    ("der", "Fisch", "fish", "Fische", "fish"),
    ("die", "Maus", "mouse", "Mäuse", "mice"),
]
COLOURS = [
    ("rot", "red"),
    ("blau", "blue"),
    ("grün", "green"),
    ("gelb", "yellow"),
    ("schwarz", "black"),
    ("weiß", "white"),
]
NUMBERS = [("zwei", "two"), ("drei", "three"), ("vier", "four"), ("fünf", "five")]
VERBS = [("schläft", "sleeps"), ("läuft", "runs"), ("frisst", "eats"), ("spielt", "plays")]

# The largest unigram vocabulary SentencePiece builds from this corpus is a
# little under 90 pieces.
VOCAB_SIZE = 80


def make_corpus() -> list[tuple[str, str]]:
    """84 (German, English) sentence pairs from three templates."""
    pairs = []
    for article, animal_de, animal_en, _, _ in ANIMALS:
        for colour_de, colour_en in COLOURS:
            pairs.append((f"{article.capitalize()} {animal_de} ist {colour_de} .", f"The {animal_en} is {colour_en} ."))
        for verb_de, verb_en in VERBS:
            pairs.append((f"{article.capitalize()} {animal_de} {verb_de} .", f"The {animal_en} {verb_en} ."))
    for _, _, _, plural_de, plural_en in ANIMALS:
        for number_de, number_en in NUMBERS:
            pairs.append((f"Ich sehe {number_de} {plural_de} .", f"I see {number_en} {plural_en} ."))
    return pairs


@pytest.fixture(scope="session", autouse=True)
def single_thread_torch():
    """Run torch on one thread: the models here are tiny, and on a small busy
    machine intra-op threads fight each other and slow tests down many times."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def corpus_pairs() -> list[tuple[str, str]]:
    return make_corpus()


@pytest.fixture(scope="session")
def tokenizers(corpus_pairs) -> TokenizerPair:
    """One joint SentencePiece model for both languages."""
    joint = train_sentencepiece([text for pair in corpus_pairs for text in pair], vocab_size=VOCAB_SIZE)
    return TokenizerPair(joint, joint)


@pytest.fixture(scope="session")
def corpus_prefix(tmp_path_factory, corpus_pairs) -> str:
    """The corpus as `train.de.gz` / `train.en.gz`; returns the prefix `.../train`."""
    directory = tmp_path_factory.mktemp("corpus")
    for index, language in enumerate(("de", "en")):
        with gzip.open(directory / f"train.{language}.gz", "wt", encoding="utf-8") as out:
            out.writelines(pair[index] + "\n" for pair in corpus_pairs)
    return str(directory / "train")


ARCHITECTURES = [
    {"cell": cell, "attention": attention, "bidirectional": bidirectional}
    for cell, attention, bidirectional in itertools.product(
        [c.value for c in Cell], [a.value for a in AttentionKind], (False, True)
    )
]


@pytest.fixture(
    params=ARCHITECTURES,
    ids=[f"{a['cell']}-{a['attention']}-{'bi' if a['bidirectional'] else 'uni'}" for a in ARCHITECTURES],
)
def architecture(request) -> dict:
    """Every cell x attention x directionality; a test taking it runs once per combination."""
    return dict(request.param)


@pytest.fixture
def make_model() -> Callable[..., Seq2Seq]:
    """Build a tiny randomly initialised model in eval mode: `make_model(seed=0, **config)`."""

    def build(seed: int = 0, **overrides) -> Seq2Seq:
        options = {
            "src_vocab_size": 17,
            "tgt_vocab_size": 23,
            "embedding_size": 8,
            "hidden_size": 12,
            "num_layers": 2,
            "dropout": 0.0,
            **overrides,
        }
        torch.manual_seed(seed)
        return Seq2Seq(ModelConfig(**options)).eval()

    return build


@pytest.fixture(scope="session")
def tiny_model(tokenizers) -> Callable[..., Seq2Seq]:
    """`tiny_model(seed=0, **config)`: an untrained model over the toy tokenizer's
    vocabulary (embeddings 8, hidden 8, one layer unless overridden), in eval mode."""

    def build(seed: int = 0, **overrides) -> Seq2Seq:
        options = {"embedding_size": 8, "hidden_size": 8, "num_layers": 1, "dropout": 0.0, **overrides}
        vocabulary = (tokenizers.source.vocab_size, tokenizers.target.vocab_size)
        torch.manual_seed(seed)
        return Seq2Seq(ModelConfig(*vocabulary, **options)).eval()

    return build


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tokenizers) -> Callable[..., Path]:
    """`tiny_checkpoint(path, source="de", target="en", seed=0, **config)`: a
    `tiny_model` saved with the toy tokenizer as a checkpoint file; returns `path`."""

    def save(path: Path, source: str = "de", target: str = "en", seed: int = 0, **overrides) -> Path:
        info = {"source_language": source, "target_language": target}
        save_checkpoint(path, tiny_model(seed, **overrides), tokenizers, info)
        return path

    return save


def random_sources(
    lengths: list[int], vocab_size: int, eos_id: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded (B, S) source batch of random real tokens (ids >= 4), each closed by eos, and its lengths (B,)."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    source = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        source[row, : length - 1] = torch.randint(4, vocab_size, (length - 1,), generator=generator)
        source[row, length - 1] = eos_id
    return source, torch.tensor(lengths)


@pytest.fixture
def make_sources() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """`make_sources([5, 3, 7], vocab_size)` -> padded source (B, S) and lengths (B,)."""
    return random_sources
