"""Shared fixtures: a toy German-English corpus made here, a joint tokenizer
trained on it, and tiny models of every architecture; a larger template corpus
and a model trained on it through `mt train` (`cli_run`, `cli_model`: the tests
using them are marked slow); a small test set of real sentences for the shipped
models.

Everything is built by the tests themselves (no network, no ../shared data)
and kept small, so that the whole suite runs on a CPU in seconds.
"""

from __future__ import annotations

import atexit
import gzip
import itertools
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

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

from helpers import _write_lines, _write_pair, invoke  # noqa: E402

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


# --------------------------------------------------------------------------
# A template corpus: subject + verb + place, German and English side by side;
# a tokenizer and a model trained on it through the CLI. Training takes a while
# (once per test process): the tests that use `cli_run` or `cli_model` are slow.

SUBJECTS = [
    ("ein Hund", "a dog"),
    ("eine Katze", "a cat"),
    ("ein Mann", "a man"),
    ("eine Frau", "a woman"),
    ("ein Kind", "a child"),
    ("ein Junge", "a boy"),
    ("ein Mädchen", "a girl"),
    ("ein alter Mann", "an old man"),
    ("eine junge Frau", "a young woman"),
    ("ein großer Hund", "a big dog"),
    ("ein Arbeiter", "a worker"),
    ("eine Gruppe Kinder", "a group of children"),
    ("ein Radfahrer", "a cyclist"),
    ("ein Musiker", "a musician"),
    ("eine Lehrerin", "a teacher"),
    ("ein Polizist", "a police officer"),
    ("ein Fußballspieler", "a soccer player"),
    ("eine ältere Dame", "an elderly lady"),
    ("ein kleiner Vogel", "a small bird"),
    ("ein Verkäufer", "a salesman"),
]


ACTIONS = [
    ("läuft", "runs"),
    ("spielt", "plays"),
    ("schläft", "sleeps"),
    ("sitzt", "sits"),
    ("wartet", "waits"),
    ("steht", "stands"),
    ("tanzt", "dances"),
    ("lacht", "laughs"),
    ("singt", "sings"),
    ("isst", "eats"),
    ("arbeitet", "works"),
    ("liest", "reads"),
    ("springt", "jumps"),
    ("malt", "paints"),
    ("telefoniert", "talks on the phone"),
]


PLACES = [
    ("im Park", "in the park"),
    ("auf der Straße", "on the street"),
    ("am Strand", "on the beach"),
    ("im Garten", "in the garden"),
    ("im Schnee", "in the snow"),
    ("vor dem Haus", "in front of the house"),
    ("neben einem Baum", "next to a tree"),
    ("in der Küche", "in the kitchen"),
    ("auf einer Bühne", "on a stage"),
    ("am Fluss", "by the river"),
    ("auf dem Markt", "at the market"),
    ("im Wasser", "in the water"),
    ("auf einer Brücke", "on a bridge"),
    ("hinter dem Zaun", "behind the fence"),
    ("im Restaurant", "in the restaurant"),
]


TIMES = [
    ("", ""),
    ("heute", "today"),
    ("am Morgen", "in the morning"),
    ("im Winter", "in winter"),
    ("oft", "often"),
    ("gerne", "happily"),
    ("am Abend", "in the evening"),
]


def _template_pairs(count: int = 220) -> list[tuple[str, str]]:
    """`count` distinct pairs, the same on every run."""
    rng = random.Random(1234)
    seen, pairs = set(), []
    while len(pairs) < count:
        choice = tuple(rng.randrange(len(words)) for words in (SUBJECTS, ACTIONS, PLACES, TIMES))
        if choice in seen:
            continue
        seen.add(choice)
        (de_s, en_s), (de_v, en_v), (de_p, en_p), (de_t, en_t) = (
            words[i] for words, i in zip((SUBJECTS, ACTIONS, PLACES, TIMES), choice)
        )
        de = " ".join(w for w in (de_s, de_v, de_t, de_p) if w) + "."
        en = " ".join(w for w in (en_s, en_v, en_p, en_t) if w) + "."
        pairs.append((de[0].upper() + de[1:], en[0].upper() + en[1:]))
    return pairs


@pytest.fixture(scope="session")
def cli_corpus(tmp_path_factory) -> SimpleNamespace:
    """200 training and 20 validation pairs as PREFIX.de.gz / PREFIX.en.gz."""
    root = tmp_path_factory.mktemp("cli_corpus")
    pairs = _template_pairs()
    train, valid = pairs[:200], pairs[200:220]
    train_prefix = _write_pair(root / "train", [s for s, _ in train], [t for _, t in train])
    valid_prefix = _write_pair(root / "valid", [s for s, _ in valid], [t for _, t in valid])
    return SimpleNamespace(
        root=root,
        train=train_prefix,
        valid=valid_prefix,
        valid_pairs=valid,
        valid_src=Path(f"{valid_prefix}.de.gz"),
        valid_ref=Path(f"{valid_prefix}.en.gz"),
    )


@pytest.fixture(scope="session")
def cli_tokenizer(cli_corpus) -> SimpleNamespace:
    """`mt train-tokenizer` on the template corpus (joint unigram, 150 pieces)."""
    output = cli_corpus.root / "tokenizer"
    result = invoke(
        [
            "train-tokenizer",
            "--train",
            cli_corpus.train,
            "--src",
            "de",
            "--tgt",
            "en",
            "--vocab-size",
            150,
            "--output",
            output,
        ]
    )
    return SimpleNamespace(result=result, directory=output)


@pytest.fixture(scope="session")
def cli_run(cli_corpus, cli_tokenizer) -> SimpleNamespace:
    """`mt train` with a tiny model for 200 steps on CPU. Read-only for the tests that use it."""
    assert cli_tokenizer.result.exit_code == 0, cli_tokenizer.result.output
    # A realistic, longish run directory: with the pytest base directory the
    # checkpoint paths are wider than an 80-column terminal.
    run = cli_corpus.root / "runs" / "de-en-luong-e32-h64-l1-200-steps"
    result = invoke(
        [
            "train",
            "--train", cli_corpus.train,
            "--valid", cli_corpus.valid,
            "--src", "de",
            "--tgt", "en",
            "--tokenizer", cli_tokenizer.directory,
            "--output", run,
            "--embedding-size", 32,
            "--hidden-size", 64,
            "--layers", 1,
            "--dropout", 0.1,
            "--attention", "luong",
            "--batch-tokens", 400,
            "--max-steps", 200,
            "--validate-every", 100,
            "--patience", 0,
            "--device", "cpu",
            "--lr", 0.01,
            "--seed", 7,
        ],
        env={"COLUMNS": "80"},  # what rich assumes for a log file or a pipe
    )  # fmt: skip
    return SimpleNamespace(result=result, directory=run, best=run / "best.safetensors", last=run / "last.safetensors")


@pytest.fixture(scope="session")
def cli_model(cli_run) -> Path:
    """The best checkpoint of the tiny run (fails the dependent test if training failed)."""
    assert cli_run.result.exit_code == 0, cli_run.result.output
    assert cli_run.best.is_file()
    return cli_run.best


# --------------------------------------------------------------------------
# Real sentences, for the shipped models.

GERMAN = [
    "Ein Hund läuft durch den Park.",
    "Zwei Männer spielen Fußball auf einer Wiese.",
    "Eine Frau liest ein Buch im Zug.",
    "Das kleine Mädchen isst ein Eis.",
    "Ich habe heute keine Zeit.",
    "Kannst du mir bitte helfen?",
    "Wir fahren morgen nach Berlin.",
    "Er trinkt jeden Morgen Kaffee.",
]


ENGLISH = [
    "A dog runs through the park.",
    "Two men are playing soccer on a meadow.",
    "A woman is reading a book on the train.",
    "The little girl is eating an ice cream.",
    "I don't have time today.",
    "Can you please help me?",
    "We are going to Berlin tomorrow.",
    "He drinks coffee every morning.",
]


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("test-set")
    return _write_lines(directory / "test.de", GERMAN), _write_lines(directory / "test.en", ENGLISH)
