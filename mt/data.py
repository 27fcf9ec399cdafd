"""Parallel corpora: reading, tokenizing, filtering, and length-bucketed batches.

A corpus is named by a *spec* string:

- `PREFIX`: two plain-text files `PREFIX.SRC` and `PREFIX.TGT` (`.gz` allowed),
  one sentence per line, e.g. `data/multi30k/train` with `de` and `en`;
- `FILE.tsv` (or `.tsv.gz`): one pair per line, source TAB target;
- `hf:NAME[@SPLIT]` or a directory written by `save_to_disk` (`DIR[@SPLIT]`): a Hugging
  Face dataset, read through `datasets`. Columns are found by key: a flat
  column per language (`de`, `en`), or a `translation` dict column as in the
  WMT datasets.

Training may mix several corpora; a spec may end in `:N`, an upsampling
factor: each epoch holds every pair of that corpus N times (`CorpusSpec`).

Every reader returns a `datasets.Dataset` with the columns `source` and
`target`, backed by an Arrow file that is memory-mapped (text files are
written to one in the `datasets` cache first), so that a corpus larger than
memory never sits in Python lists; tokenizing is a cached `Dataset.map`, and
training reads a batch's rows when it needs them.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import itertools
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mt.config import MTError
from mt.files import iter_lines

if TYPE_CHECKING:  # datasets is slow to import; only corpus readers need it
    import datasets

    from mt.tokenizer import TokenizerPair


def _language_file(prefix: str, language: str) -> Path:
    for candidate in (Path(f"{prefix}.{language}"), Path(f"{prefix}.{language}.gz")):
        if candidate.exists():
            return candidate
    raise MTError(f"file not found: {prefix}.{language} (or {prefix}.{language}.gz)")


def corpus_files(spec: str, src_lang: str, tgt_lang: str) -> list[Path]:
    """The local files a text or TSV corpus spec reads (empty for `datasets` corpora)."""
    if _is_datasets_spec(spec):
        return []
    if _is_tsv(spec):
        return [Path(spec)]
    return [_language_file(spec, src_lang), _language_file(spec, tgt_lang)]


def _is_tsv(spec: str) -> bool:
    return spec.endswith((".tsv", ".tsv.gz"))


def _dataset_name_and_split(spec: str) -> tuple[str, str]:
    """`hf:NAME@SPLIT` or `DIR@SPLIT` -> (NAME or DIR, SPLIT or ""); an existing
    directory whose own name holds an @ is taken whole."""
    name = spec.removeprefix("hf:")
    if not spec.startswith("hf:") and Path(name).exists():
        return name, ""
    base, at, split = name.rpartition("@")
    return (base, split) if at else (name, "")


def _is_datasets_spec(spec: str) -> bool:
    if spec.startswith("hf:"):
        return True
    path = Path(_dataset_name_and_split(spec)[0])
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def _text_pairs(source_path: str, target_path: str, stamp: str) -> Iterator[dict[str, str]]:
    """Rows of a pair of line-aligned text files. (`stamp`, the files' size and
    time, only keys the `datasets` cache: an edited file is read afresh.)"""
    sources, targets = iter_lines(Path(source_path)), iter_lines(Path(target_path))
    count = 0
    for source, target in itertools.zip_longest(sources, targets):
        if source is None or target is None:
            rest = 1 + sum(1 for _ in (targets if source is None else sources))
            source_count, target_count = (count, count + rest) if source is None else (count + rest, count)
            raise MTError(
                f"{source_path} has {source_count} lines but {target_path} has {target_count}; "
                "a parallel corpus needs one line per pair"
            )
        count += 1
        yield {"source": source, "target": target}


def _tsv_pairs(path: str, stamp: str) -> Iterator[dict[str, str]]:
    """Rows of a source-TAB-target file (`stamp` as for `_text_pairs`)."""
    for number, line in enumerate(iter_lines(Path(path)), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise MTError(f"{path}: line {number} has {len(fields)} tab-separated columns; expected 2 (source, target)")
        yield {"source": fields[0], "target": fields[1]}


def _arrow_corpus(rows, files: list[Path], **paths: str) -> datasets.Dataset:
    """Write the rows of a text corpus to an Arrow file in the `datasets` cache,
    a batch at a time, and memory-map it: the corpus never sits in Python lists,
    and a second run (or a second worker) reads the cached file."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    for path in files:
        if not path.exists():
            raise MTError(f"file not found: {path}")
    stamp = ";".join(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in files)
    if next(rows(**paths, stamp=stamp), None) is None:  # datasets cannot build an empty split
        raise MTError(f"corpus {' + '.join(map(str, files))} is empty")
    features = datasets.Features({"source": datasets.Value("string"), "target": datasets.Value("string")})
    try:
        return datasets.Dataset.from_generator(rows, gen_kwargs={**paths, "stamp": stamp}, features=features)
    except DatasetGenerationError as error:  # our own MTError, wrapped by the builder
        if isinstance(error.__cause__, MTError):
            raise error.__cause__ from None
        raise


def _check_hub_reachable() -> None:
    """Fail at once, in one line, when the Hugging Face Hub cannot be reached: its client
    would retry for half a minute, printing a line per try."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
    except OSError as error:
        raise MTError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({error.strerror or error}); "
            "a dataset downloaded before loads offline with HF_HUB_OFFLINE=1"
        ) from None


def _read_datasets(spec: str, src_key: str, tgt_key: str) -> datasets.Dataset:
    import datasets

    name, split = _dataset_name_and_split(spec)
    if spec.startswith("hf:"):
        _check_hub_reachable()
    try:
        if spec.startswith("hf:"):
            dataset = datasets.load_dataset(name, split=split or "train")
        else:
            dataset = datasets.load_from_disk(name)
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split or "train"]
    except (FileNotFoundError, ValueError, KeyError, ConnectionError) as error:
        raise MTError(
            f"cannot load dataset {spec!r}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None
    except Exception as error:  # the hub client raises many types for a missing dataset
        raise MTError(
            f"cannot load dataset {spec!r}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    columns = dataset.column_names
    if src_key in columns and tgt_key in columns:
        return dataset.select_columns([src_key, tgt_key]).rename_columns({src_key: "source", tgt_key: "target"})
    if "translation" in columns:
        return dataset.map(
            lambda row: {"source": row["translation"][src_key], "target": row["translation"][tgt_key]},
            remove_columns=columns,
        )
    raise MTError(f"dataset {spec!r} has columns {columns}; expected {src_key!r} and {tgt_key!r}, or 'translation'")


def load_corpus(spec: str, src_lang: str, tgt_lang: str) -> datasets.Dataset:
    """Read a parallel corpus (see the module docstring) as a Dataset(source, target)."""
    if _is_datasets_spec(spec):
        dataset = _read_datasets(spec, src_lang, tgt_lang)
    elif _is_tsv(spec):
        dataset = _arrow_corpus(_tsv_pairs, [Path(spec)], path=spec)
    else:
        source, target = corpus_files(spec, src_lang, tgt_lang)
        dataset = _arrow_corpus(_text_pairs, [source, target], source_path=str(source), target_path=str(target))
    if len(dataset) == 0:
        raise MTError(f"corpus {spec!r} is empty")
    return dataset


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus spec and its upsampling factor: `PATH`, or `PATH:N` for N copies per epoch."""

    spec: str
    factor: int = 1

    @classmethod
    def parse(cls, text: str) -> CorpusSpec:
        base, colon, tail = text.rpartition(":")
        if colon and base and tail.isdigit():
            if int(tail) < 1:
                raise MTError(f"corpus {text!r}: the upsampling factor after ':' must be >= 1")
            return cls(base, int(tail))
        return cls(text)

    def __str__(self) -> str:
        return self.spec if self.factor == 1 else f"{self.spec}:{self.factor}"


def iter_sentences(dataset: datasets.Dataset, columns: Sequence[str]) -> Iterator[str]:
    """The texts of `columns`, read from the dataset a block at a time."""
    for block in dataset.iter(batch_size=10_000):
        for column in columns:
            yield from block[column]


def corpus_fingerprint(spec: str, src_lang: str, tgt_lang: str, dataset: datasets.Dataset) -> str:
    """SHA-256 of the corpus files, or the dataset's own fingerprint."""
    files = corpus_files(spec, src_lang, tgt_lang)
    if not files:
        return f"datasets:{dataset._fingerprint}"
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            hashlib.file_digest(handle, lambda: digest)
    return f"sha256:{digest.hexdigest()}"


def mixture_sentences(corpora: Sequence[tuple[datasets.Dataset, int]], columns: Sequence[str]) -> Iterator[str]:
    """The texts of several corpora, each repeated by its upsampling factor: a
    tokenizer sampling from this stream sees the languages mixed as training does."""
    for dataset, factor in corpora:
        for _ in range(factor):
            yield from iter_sentences(dataset, columns)


def train_tokenizers(
    train: Sequence[str],
    src: str,
    tgt: str,
    vocab_size: int,
    model_type: str,
    joint: bool,
    max_sentences: int,
    seed: int,
) -> TokenizerPair:
    """SentencePiece tokenizers learnt from a random sample of at most `max_sentences`
    sentences of the training corpora, mixed as `mt train` mixes them: one for both
    languages (`joint`), or one each."""
    from mt.tokenizer import TokenizerPair, train_sentencepiece

    if vocab_size < 8:
        raise MTError(f"--vocab-size must be >= 8, got {vocab_size}")
    if max_sentences <= 100:  # SentencePiece's smallest sample
        raise MTError(f"--max-sentences must be > 100, got {max_sentences}")
    corpora = [(load_corpus(spec.spec, src, tgt), spec.factor) for spec in map(CorpusSpec.parse, train)]
    options = dict(vocab_size=vocab_size, model_type=model_type, seed=seed, input_sentence_size=max_sentences)
    if joint:
        source = target = train_sentencepiece(mixture_sentences(corpora, ["source", "target"]), **options)
    else:
        source = train_sentencepiece(mixture_sentences(corpora, ["source"]), **options)
        target = train_sentencepiece(mixture_sentences(corpora, ["target"]), **options)
    return TokenizerPair(source, target)


@dataclass(frozen=True)
class TokenizedCorpus:
    """The kept pairs' token ids in an Arrow table (memory-mapped when the
    corpus came from files: the ids are read a batch at a time), each pair's
    padded length, and how many pairs the length filter dropped."""

    pairs: datasets.Dataset  # columns source_ids, target_ids
    lengths: torch.Tensor  # (N,) max(source, target) + 1: the pair's width in a batch
    dropped: int

    @classmethod
    def from_ids(cls, source: Sequence[Sequence[int]], target: Sequence[Sequence[int]]) -> TokenizedCorpus:
        """A corpus of already-encoded pairs, in memory."""
        import datasets

        pairs = datasets.Dataset.from_dict({"source_ids": list(source), "target_ids": list(target)})
        lengths = torch.tensor([max(len(s), len(t)) + 1 for s, t in zip(source, target)], dtype=torch.long)
        return cls(pairs, lengths, 0)

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def mix(cls, parts: Sequence[tuple[TokenizedCorpus, int]]) -> TokenizedCorpus:
        """One corpus of several, each repeated by its upsampling factor. The
        Arrow tables are concatenated, not copied: N copies cost N length tensors."""
        import datasets

        if len(parts) == 1 and parts[0][1] == 1:
            return parts[0][0]
        copies = [corpus for corpus, factor in parts for _ in range(factor)]
        pairs = datasets.concatenate_datasets([corpus.pairs for corpus in copies])
        lengths = torch.cat([corpus.lengths for corpus in copies])
        return cls(pairs, lengths, sum(corpus.dropped for corpus, _ in parts))

    def ids(self, indices: torch.Tensor) -> tuple[list[list[int]], list[list[int]]]:
        """Source and target ids of the pairs at `indices`."""
        rows = self.pairs[indices.tolist()]
        return rows["source_ids"], rows["target_ids"]


def tokenize_corpus(dataset: datasets.Dataset, tokenizers: TokenizerPair, max_length: int) -> TokenizedCorpus:
    """Encode both sides with `Dataset.map` (cached next to a file-backed
    corpus) and drop pairs that are empty or longer than `max_length` subwords
    on either side."""
    proto_hash = hashlib.sha256(tokenizers.source.model_proto + tokenizers.target.model_proto).hexdigest()[:16]

    def encode(batch: dict[str, list[str]]) -> dict[str, list]:
        source, target = tokenizers.source.encode(batch["source"]), tokenizers.target.encode(batch["target"])
        return {
            "source_ids": source,
            "target_ids": target,
            "source_length": [len(ids) for ids in source],
            "target_length": [len(ids) for ids in target],
        }

    encoded = dataset.map(
        encode,
        batched=True,
        remove_columns=dataset.column_names,
        new_fingerprint=f"{dataset._fingerprint}-ids-{proto_hash}",
        desc="tokenizing",
    )
    # Lengths straight from the Arrow columns: a copy of two integers per pair, not a row format.
    source_length, target_length = (
        torch.tensor(encoded.data.column(name).to_numpy()) for name in ("source_length", "target_length")
    )
    fits = (source_length > 0) & (source_length <= max_length) & (target_length > 0) & (target_length <= max_length)
    kept = fits.nonzero().squeeze(1)  # (N,)
    pairs = encoded.select_columns(["source_ids", "target_ids"])
    if len(kept) < len(encoded):
        pairs = pairs.select(kept.numpy())
    lengths = torch.maximum(source_length, target_length)[kept] + 1
    return TokenizedCorpus(pairs, lengths, len(encoded) - len(kept))


def make_batches(
    lengths: torch.Tensor | Sequence[int], batch_tokens: int, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Group example indices into batches of similar length.

    Examples are sorted by length (ties broken at random when `generator` is
    given, so batches differ between epochs), cut into batches whose padded
    size `max_length * count` stays within `batch_tokens` (a longer single
    example gets a batch of its own), and the batch order is shuffled.
    Every index appears in exactly one batch; each batch is a 1-D tensor of
    indices (views of one tensor, so a million pairs cost 8 MB, not lists).
    """
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if generator is None:
        order = torch.argsort(lengths, stable=True)
    else:  # a length plus noise in [0, 1) sorts by length, ties at random
        noise = torch.rand(len(lengths), generator=generator)
        order = torch.argsort(lengths.double() + noise.double(), stable=True)
    sorted_lengths = lengths[order].numpy()
    batches: list[torch.Tensor] = []
    start = 0
    while start < len(order):
        # The padded size of order[start:end] is sorted_lengths[end - 1] * (end - start),
        # which grows with end: find the largest end within budget by bisection.
        count = bisect.bisect_right(
            range(start + 1, min(len(order), start + batch_tokens) + 1),
            batch_tokens,
            key=lambda stop: int(sorted_lengths[stop - 1]) * (stop - start),
        )
        end = start + max(count, 1)
        batches.append(order[start:end])
        start = end
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Right-pad id lists into a (B, L) tensor."""
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


@dataclass(frozen=True)
class Batch:
    """One training batch. Targets are shifted for teacher forcing:
    `target_in` starts with bos, `target_out` ends with eos."""

    source: torch.Tensor  # (B, S)
    source_lengths: torch.Tensor  # (B,)
    target_in: torch.Tensor  # (B, T)
    target_out: torch.Tensor  # (B, T)

    @property
    def target_tokens(self) -> int:
        """Target tokens the loss is computed on (eos included, padding not)."""
        return int((self.target_out != 0).sum())

    @property
    def num_tokens(self) -> int:
        return int(self.source_lengths.sum()) + self.target_tokens

    def to(self, device: torch.device) -> Batch:
        """The batch on `device`; copies to a GPU go from pinned memory, without
        blocking the host."""
        tensors = (self.source, self.source_lengths, self.target_in, self.target_out)
        if device.type == "cuda":
            tensors = tuple(t.pin_memory() for t in tensors)
        return Batch(*(t.to(device, non_blocking=True) for t in tensors))


def source_tensors(source: Sequence[Sequence[int]], pad_id: int, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source id lists -> padded (B, S) tensor with eos closing each sentence, and lengths (B,)."""
    closed = [[*s, eos_id] for s in source]
    return pad(closed, pad_id), torch.tensor([len(s) for s in closed], dtype=torch.long)


def collate(
    source: Sequence[Sequence[int]], target: Sequence[Sequence[int]], pad_id: int, bos_id: int, eos_id: int
) -> Batch:
    padded_source, source_lengths = source_tensors(source, pad_id, eos_id)
    return Batch(
        source=padded_source,
        source_lengths=source_lengths,
        target_in=pad([[bos_id, *t] for t in target], pad_id),
        target_out=pad([[*t, eos_id] for t in target], pad_id),
    )


# Hugging Face split names -> the file names Multi30k uses.
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test_2016_flickr"}


def export_dataset(name: str, output: Path) -> list[Path]:
    """Write every split and language of a hub translation dataset as
    `OUTPUT/{split}.{lang}.gz` text files (the layout `make data` expects)."""
    import datasets

    try:
        splits = datasets.load_dataset(name)
    except Exception as error:  # the hub client raises many types for a missing dataset
        raise MTError(
            f"cannot load dataset {name!r}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for split, dataset in splits.items():
        if "translation" in dataset.column_names:
            dataset = dataset.map(lambda row: row["translation"], remove_columns=dataset.column_names)
        for language in dataset.column_names:
            path = output / f"{SPLIT_FILES.get(split, split)}.{language}.gz"
            with gzip.open(path, "wt", encoding="utf-8") as out:
                out.writelines(_single_line(text) + "\n" for text in dataset[language])
            written.append(path)
    return written


def _single_line(text: str) -> str:
    return " ".join(text.split("\n"))


def training_data(
    train: Sequence[str], valid: Sequence[str], src: str, tgt: str, tokenizers: TokenizerPair, max_length: int, log
) -> tuple[TokenizedCorpus, dict[str, tuple[list[str], list[str]]], list[dict]]:
    """Read and tokenize the training corpora (mixed by their upsampling factors) and
    read the validation sets; `log` (a function taking a line) hears what the length
    filter dropped. Returns the mixed corpus, the validation sets by spec and, per
    training corpus, its spec, factor and fingerprint (for the checkpoint's provenance)."""
    specs = [CorpusSpec.parse(text) for text in train]
    validation = {}
    for spec in valid:
        valid_data = load_corpus(spec, src, tgt)
        validation[spec] = (valid_data["source"], valid_data["target"])
    parts, provenance = [], []
    for spec in specs:
        train_data = load_corpus(spec.spec, src, tgt)
        part = tokenize_corpus(train_data, tokenizers, max_length)
        if not len(part):
            raise MTError(
                f"{spec.spec}: no training pairs left after filtering empty and longer than {max_length} subwords"
            )
        times = f", taken {spec.factor} times per epoch" if spec.factor > 1 else ""
        log(
            f"training pairs of {spec.spec}: {len(part):,} kept, {part.dropped:,} dropped "
            f"(empty or longer than {max_length} subwords){times}"
        )
        parts.append((part, spec.factor))
        provenance.append(
            {
                "corpus": spec.spec,
                "factor": spec.factor,
                "fingerprint": corpus_fingerprint(spec.spec, src, tgt, train_data),
            }
        )
    return TokenizedCorpus.mix(parts), validation, provenance
