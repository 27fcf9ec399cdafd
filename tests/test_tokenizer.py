"""SentencePiece tokenizers: round trips, the fixed special ids, saving and loading."""

from __future__ import annotations

import io

import pytest
import sentencepiece as spm

from mt.config import MTError
from mt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, TokenizerPair, train_sentencepiece


def test_decode_inverts_encode_for_ordinary_text(tokenizers, corpus_pairs):
    # Seen sentences, and unseen combinations of seen words.
    texts = [*corpus_pairs[0], *corpus_pairs[-1], "Die Maus ist grün .", "I see five white horses ."]
    ids = tokenizers.source.encode(texts)
    assert all(ids_of_text for ids_of_text in ids)
    assert tokenizers.source.decode(ids) == texts


def test_encode_adds_no_bos_or_eos_and_no_padding(tokenizers, corpus_pairs):
    for ids in tokenizers.source.encode([text for pair in corpus_pairs for text in pair]):
        assert not {PAD_ID, BOS_ID, EOS_ID} & set(ids)


def test_special_ids_are_pad0_unk1_bos2_eos3(tokenizers):
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    processor = spm.SentencePieceProcessor(model_proto=tokenizers.source.model_proto)
    assert (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()) == (0, 1, 2, 3)


def test_unseen_characters_encode_as_unk(tokenizers):
    (ids,) = tokenizers.source.encode(["Der Hund ist 緑 ."])
    assert UNK_ID in ids


def test_vocab_size_is_the_requested_size(tokenizers):
    assert tokenizers.source.vocab_size == 80


def test_model_with_other_special_ids_is_rejected(corpus_pairs):
    # SentencePiece's own defaults: unk 0, bos 1, eos 2, no pad.
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([text for pair in corpus_pairs for text in pair]),
        model_writer=proto,
        vocab_size=60,
        minloglevel=2,
    )
    with pytest.raises(MTError, match="special ids"):
        Tokenizer(proto.getvalue())


def test_garbage_bytes_are_not_a_tokenizer():
    with pytest.raises(MTError, match="not a SentencePiece model"):
        Tokenizer(b"this is not a sentencepiece model")


def test_tokenizer_pair_survives_save_and_load(tokenizers, corpus_pairs, tmp_path):
    tokenizers.save(tmp_path / "tok")
    loaded = TokenizerPair.load(tmp_path / "tok")
    assert loaded.joint
    assert loaded.source.model_proto == tokenizers.source.model_proto
    assert loaded.target.model_proto == tokenizers.target.model_proto
    texts = [pair[1] for pair in corpus_pairs[:5]]
    assert loaded.target.encode(texts) == tokenizers.target.encode(texts)


def test_separate_tokenizers_survive_save_and_load(tokenizers, corpus_pairs, tmp_path):
    target = train_sentencepiece([english for _, english in corpus_pairs], vocab_size=50)
    pair = TokenizerPair(tokenizers.source, target)
    assert not pair.joint
    pair.save(tmp_path)
    loaded = TokenizerPair.load(tmp_path)
    assert not loaded.joint
    assert (loaded.source.vocab_size, loaded.target.vocab_size) == (tokenizers.source.vocab_size, 50)
    assert loaded.target.model_proto == target.model_proto


def test_loading_from_a_directory_without_tokenizer_is_an_error(tmp_path):
    with pytest.raises(MTError, match="no tokenizer"):
        TokenizerPair.load(tmp_path)


def test_vocabulary_too_large_for_the_corpus_names_the_option(corpus_pairs):
    with pytest.raises(MTError, match="--vocab-size"):
        train_sentencepiece([text for pair in corpus_pairs for text in pair], vocab_size=5000)


def test_unknown_model_type_is_an_error(corpus_pairs):
    with pytest.raises(MTError, match="model type"):
        train_sentencepiece([corpus_pairs[0][0]], vocab_size=50, model_type="wordpiece")


def test_bpe_tokenizer_round_trips(corpus_pairs):
    bpe = train_sentencepiece([text for pair in corpus_pairs for text in pair], vocab_size=60, model_type="bpe")
    texts = [corpus_pairs[3][0], corpus_pairs[70][1]]
    assert bpe.decode(bpe.encode(texts)) == texts


def test_a_vocabulary_smaller_than_the_alphabet_says_how_large_it_must_be():
    with pytest.raises(MTError, match=r"distinct characters of this corpus; pass --vocab-size \d+ or more"):
        train_sentencepiece(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ"] * 20, vocab_size=10)
