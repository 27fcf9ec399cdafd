"""Corpora and batches: reading, filtering, length-bucketed batches, padding."""

from __future__ import annotations

import gzip
import os
import random

import pytest
import torch

from mt.config import MTError
from mt.data import collate, load_corpus, make_batches, pad, source_tensors, tokenize_corpus
from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID


def random_lengths(count: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 40) for _ in range(count)]


# -- make_batches -------------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 0, 7])
def test_every_index_is_in_exactly_one_batch(seed):
    lengths = random_lengths(300)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    batches = make_batches(lengths, batch_tokens=100, generator=generator)
    flat = [index for batch in batches for index in batch.tolist()]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(len(batch) for batch in batches)


@pytest.mark.parametrize("seed", [None, 3])
def test_batches_stay_within_batch_tokens(seed):
    lengths = [*random_lengths(200), 150, 300]  # two examples longer than the budget
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    batches = [batch.tolist() for batch in make_batches(lengths, batch_tokens=120, generator=generator)]
    for batch in batches:
        padded_size = max(lengths[i] for i in batch) * len(batch)
        assert padded_size <= 120 or len(batch) == 1
    # The over-long examples are alone in their batches.
    assert [200] in batches and [201] in batches


def test_batches_group_similar_lengths():
    lengths = random_lengths(400)
    batches = [batch.tolist() for batch in make_batches(lengths, batch_tokens=200)]
    # Sorting by length means batches cover disjoint length ranges (ties aside).
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    for (_, high), (low, _) in zip(spans, spans[1:]):
        assert high <= low


def test_same_generator_seed_gives_same_batches():
    lengths = random_lengths(200)
    first = make_batches(lengths, 100, torch.Generator().manual_seed(5))
    second = make_batches(lengths, 100, torch.Generator().manual_seed(5))
    assert [b.tolist() for b in first] == [b.tolist() for b in second]


def test_different_generator_seeds_give_different_orders():
    lengths = random_lengths(200)
    first = make_batches(lengths, 100, torch.Generator().manual_seed(1))
    second = make_batches(lengths, 100, torch.Generator().manual_seed(2))
    assert [b.tolist() for b in first] != [b.tolist() for b in second]


def test_empty_input_gives_no_batches():
    assert make_batches([], 100) == []
    assert make_batches([], 100, torch.Generator().manual_seed(0)) == []


# -- padding and collate --------------------------------------------------------


def test_pad_right_pads_to_the_longest_sequence():
    padded = pad([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert padded.dtype == torch.long
    assert padded.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]


def test_source_tensors_close_each_sentence_with_eos():
    source, lengths = source_tensors([[5, 6, 7], [8]], PAD_ID, EOS_ID)
    assert source.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert lengths.tolist() == [4, 2]


def test_collate_shifts_targets_for_teacher_forcing():
    source = [[10, 11, 12], [13], [14, 15]]
    target = [[20, 21], [22, 23, 24, 25], [26]]
    batch = collate(source, target, PAD_ID, BOS_ID, EOS_ID)

    assert batch.source.shape == (3, 4)
    assert batch.source_lengths.tolist() == [4, 2, 3]
    assert batch.target_in.shape == batch.target_out.shape == (3, 5)
    for row, (src, tgt) in enumerate(zip(source, target)):
        n, m = len(src), len(tgt)
        assert batch.source[row, :n].tolist() == src
        assert batch.source[row, n] == EOS_ID
        assert (batch.source[row, n + 1 :] == PAD_ID).all()
        assert batch.target_in[row, : m + 1].tolist() == [BOS_ID, *tgt]
        assert batch.target_out[row, : m + 1].tolist() == [*tgt, EOS_ID]
        assert (batch.target_in[row, m + 1 :] == PAD_ID).all()
        assert (batch.target_out[row, m + 1 :] == PAD_ID).all()
    # target_out is target_in shifted left by one.
    shifted = batch.target_in[:, 1:] != PAD_ID
    assert torch.equal(batch.target_in[:, 1:][shifted], batch.target_out[:, :-1][shifted])
    assert batch.num_tokens == (3 + 1 + 1 + 1 + 2 + 1) + (2 + 1 + 4 + 1 + 1 + 1)


# -- load_corpus ------------------------------------------------------------


def write_lines(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_load_corpus_reads_gzipped_text_prefix(corpus_prefix, corpus_pairs):
    dataset = load_corpus(corpus_prefix, "de", "en")
    assert len(dataset) == len(corpus_pairs)
    assert list(zip(dataset["source"], dataset["target"])) == corpus_pairs


def test_load_corpus_languages_pick_the_direction(corpus_prefix, corpus_pairs):
    dataset = load_corpus(corpus_prefix, "en", "de")
    assert dataset[0] == {"source": corpus_pairs[0][1], "target": corpus_pairs[0][0]}


def test_load_corpus_reads_plain_text_prefix(tmp_path):
    write_lines(tmp_path / "dev.de", ["Der Hund ist rot .", "Die Katze schläft ."])
    write_lines(tmp_path / "dev.en", ["The dog is red .", "The cat sleeps ."])
    dataset = load_corpus(str(tmp_path / "dev"), "de", "en")
    assert dataset["source"] == ["Der Hund ist rot .", "Die Katze schläft ."]
    assert dataset["target"] == ["The dog is red .", "The cat sleeps ."]


@pytest.mark.parametrize("name", ["pairs.tsv", "pairs.tsv.gz"])
def test_load_corpus_reads_tsv(tmp_path, name):
    text = "Der Hund ist rot .\tThe dog is red .\nIch sehe zwei Mäuse .\tI see two mice .\n"
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    dataset = load_corpus(str(path), "de", "en")
    assert dataset["source"] == ["Der Hund ist rot .", "Ich sehe zwei Mäuse ."]
    assert dataset["target"] == ["The dog is red .", "I see two mice ."]


def test_tsv_line_without_two_columns_is_an_error(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("a\tb\nonly one column\n", encoding="utf-8")
    with pytest.raises(MTError, match="line 2"):
        load_corpus(str(path), "de", "en")


def test_different_line_counts_name_both_counts(tmp_path):
    write_lines(tmp_path / "train.de", [f"Satz {i}" for i in range(5)])
    write_lines(tmp_path / "train.en", [f"sentence {i}" for i in range(7)])
    with pytest.raises(MTError) as error:
        load_corpus(str(tmp_path / "train"), "de", "en")
    message = str(error.value)
    assert "5 lines" in message and "7" in message
    assert "train.de" in message and "train.en" in message


def test_non_utf8_line_names_its_line_number(tmp_path):
    (tmp_path / "train.de").write_bytes(b"Der Hund\nDie Katze\nDas Pferd \xff\xfe\n")
    write_lines(tmp_path / "train.en", ["The dog", "The cat", "The horse"])
    with pytest.raises(MTError, match=r"line 3 is not valid UTF-8"):
        load_corpus(str(tmp_path / "train"), "de", "en")


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "train.de").write_bytes(b"")
    (tmp_path / "train.en").write_bytes(b"")
    with pytest.raises(MTError, match="empty"):
        load_corpus(str(tmp_path / "train"), "de", "en")


def test_missing_corpus_file_is_an_error(tmp_path):
    write_lines(tmp_path / "train.de", ["Der Hund"])
    with pytest.raises(MTError, match=r"train\.en"):
        load_corpus(str(tmp_path / "train"), "de", "en")


def test_missing_tsv_is_an_error(tmp_path):
    with pytest.raises(MTError, match="not found"):
        load_corpus(str(tmp_path / "nothing.tsv"), "de", "en")


def test_corrupt_gzip_is_an_error(tmp_path):
    (tmp_path / "train.de.gz").write_bytes(b"this is not gzip data")
    write_lines(tmp_path / "train.en", ["The dog"])
    with pytest.raises(MTError, match="train.de.gz"):
        load_corpus(str(tmp_path / "train"), "de", "en")


def test_load_corpus_reads_a_saved_dataset(tmp_path):
    import datasets

    flat = {"de": ["Der Hund ist rot ."], "en": ["The dog is red ."]}
    nested = {"translation": [{"de": "Die Maus läuft .", "en": "The mouse runs ."}]}
    datasets.Dataset.from_dict(flat).save_to_disk(tmp_path / "flat")
    datasets.Dataset.from_dict(nested).save_to_disk(tmp_path / "nested")

    assert load_corpus(str(tmp_path / "flat"), "de", "en")[0] == {
        "source": "Der Hund ist rot .",
        "target": "The dog is red .",
    }
    assert load_corpus(str(tmp_path / "nested"), "en", "de")[0] == {
        "source": "The mouse runs .",
        "target": "Die Maus läuft .",
    }


def test_load_corpus_reads_a_split_of_a_saved_dataset_dict(tmp_path):
    # load_corpus has code for a DatasetDict directory (default split "train",
    # or DIR@SPLIT), but does not recognise such a directory as a dataset.
    import datasets

    train = datasets.Dataset.from_dict({"de": ["Der Hund ist rot ."], "en": ["The dog is red ."]})
    validation = datasets.Dataset.from_dict({"de": ["Die Katze schläft ."], "en": ["The cat sleeps ."]})
    datasets.DatasetDict({"train": train, "validation": validation}).save_to_disk(tmp_path / "splits")

    assert load_corpus(str(tmp_path / "splits"), "de", "en")["target"] == ["The dog is red ."]
    assert load_corpus(f"{tmp_path / 'splits'}@validation", "de", "en")["target"] == ["The cat sleeps ."]


def test_load_corpus_reads_a_saved_dataset_under_a_path_with_an_at_sign(tmp_path):
    # e.g. a CI workspace such as `/builds/job@2/`: the "@" is part of the path, not a split.
    import datasets

    directory = tmp_path / "job@2" / "corpus"
    datasets.Dataset.from_dict({"de": ["Der Hund ist rot ."], "en": ["The dog is red ."]}).save_to_disk(directory)
    assert load_corpus(str(directory), "de", "en")["target"] == ["The dog is red ."]


def test_dataset_without_the_language_columns_is_an_error(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"fr": ["Le chien"], "en": ["The dog"]}).save_to_disk(tmp_path / "fr-en")
    with pytest.raises(MTError, match="columns"):
        load_corpus(str(tmp_path / "fr-en"), "de", "en")


def test_a_text_corpus_is_memory_mapped_and_an_edited_file_is_read_afresh(tmp_path):
    write_lines(tmp_path / "train.de", ["Der Hund", "Die Katze"])
    write_lines(tmp_path / "train.en", ["The dog", "The cat"])
    first = load_corpus(str(tmp_path / "train"), "de", "en")
    assert first.cache_files  # an Arrow file in the datasets cache, not Python lists
    assert load_corpus(str(tmp_path / "train"), "de", "en").cache_files == first.cache_files  # read from the cache

    write_lines(tmp_path / "train.en", ["A dog", "A cat"])
    stat = (tmp_path / "train.en").stat()
    os.utime(tmp_path / "train.en", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # even on a coarse clock
    assert load_corpus(str(tmp_path / "train"), "de", "en")["target"] == ["A dog", "A cat"]


# -- tokenize_corpus ----------------------------------------------------------


def test_tokenize_corpus_drops_empty_and_too_long_pairs(tokenizers, corpus_pairs):
    import datasets

    long_sentence = " ".join(pair[0] for pair in corpus_pairs[:6])
    kept_pairs = corpus_pairs[:4]
    rows = [
        kept_pairs[0],
        ("", "The dog is red ."),  # empty source
        kept_pairs[1],
        ("Der Hund ist rot .", ""),  # empty target
        (long_sentence, "The dog is red ."),  # source too long
        kept_pairs[2],
        ("Der Hund ist rot .", long_sentence),  # target too long
        kept_pairs[3],
    ]
    max_length = 20
    assert all(len(ids) <= max_length for pair in kept_pairs for ids in tokenizers.source.encode(pair))
    assert len(tokenizers.source.encode([long_sentence])[0]) > max_length

    dataset = datasets.Dataset.from_dict({"source": [s for s, _ in rows], "target": [t for _, t in rows]})
    corpus = tokenize_corpus(dataset, tokenizers, max_length=max_length)

    assert corpus.dropped == 4
    source, target = corpus.ids(torch.arange(len(corpus)))
    assert source == tokenizers.source.encode([s for s, _ in kept_pairs])
    assert target == tokenizers.target.encode([t for _, t in kept_pairs])
    assert corpus.lengths.tolist() == [max(len(s), len(t)) + 1 for s, t in zip(source, target)]


def test_tokenize_corpus_keeps_everything_that_fits(tokenizers, corpus_prefix, corpus_pairs):
    corpus = tokenize_corpus(load_corpus(corpus_prefix, "de", "en"), tokenizers, max_length=100)
    assert corpus.pairs.cache_files  # token ids in a cached, memory-mapped Arrow file
    assert corpus.dropped == 0
    assert len(corpus) == len(corpus_pairs)
    _, target = corpus.ids(torch.arange(len(corpus)))
    assert tokenizers.target.decode(target) == [english for _, english in corpus_pairs]
