"""int8 inference: close to fp32, and each sentence's result independent of its batch mates."""

from __future__ import annotations

import platform

import pytest
import torch
from helpers import scramble

from mt.model import EncoderOutput
from mt.quantize import INT8_ENGINES, Int8Linear, Int8RNN, int8_by_default, quantize_int8


def test_int8_is_the_default_on_x86_cpus_only(monkeypatch):
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert int8_by_default(torch.device("cpu")) is x86
    assert int8_by_default(torch.device("cuda")) is False
    monkeypatch.setattr(torch.backends.quantized, "engine", "qnnpack")  # ARM's int8 engine: not measured
    assert int8_by_default(torch.device("cpu")) is False


def test_int8_model_stays_close_to_fp32(architecture, make_model, make_sources):
    model = scramble(make_model(**architecture, embedding_size=16, hidden_size=32), seed=1, std=0.1)
    source, lengths = make_sources([6, 4, 5], model.config.src_vocab_size)
    target_in = torch.randint(4, model.config.tgt_vocab_size, (3, 5))
    with torch.inference_mode():
        expected, _ = model(source, lengths, target_in)
        logits, _ = quantize_int8(model)(source, lengths, target_in)
    assert isinstance(model.encoder.rnn, Int8RNN) and isinstance(model.decoder.rnn, Int8RNN)
    assert isinstance(model.decoder.quantized_output, Int8Linear)
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max() < 0.05 * expected.abs().max()


def test_int8_covers_a_tied_output_layer(make_model, make_sources):
    model = scramble(make_model(embedding_size=16, hidden_size=32, tie_embeddings=True, attention="luong"), 1, 0.1)
    source, lengths = make_sources([6, 4], model.config.src_vocab_size)
    target_in = torch.randint(4, model.config.tgt_vocab_size, (2, 5))
    with torch.inference_mode():
        expected, _ = model(source, lengths, target_in)
        logits, _ = quantize_int8(model)(source, lengths, target_in)
    assert isinstance(model.decoder.readout, Int8Linear) and isinstance(model.decoder.quantized_output, Int8Linear)
    assert (logits - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.parametrize("engine", [e for e in INT8_ENGINES if e in torch.backends.quantized.supported_engines])
def test_int8_logits_of_a_sentence_are_the_same_alone_and_in_any_batch(
    engine, architecture, make_model, make_sources, monkeypatch
):
    """The activation scales are fixed and int8 products are exact, so a sentence's
    logits do not depend on the other sentences or the padding of its batch: a
    server's batches and `mt translate` give the same translations, whichever of
    torch's int8 engines packs the weights. (Layer sizes are multiples of 32, as a
    vectorised CPU kernel then treats every row alike.)"""
    monkeypatch.setattr(torch.backends.quantized, "engine", engine)
    model = make_model(**architecture, embedding_size=32, hidden_size=64, tie_embeddings=True)
    model = quantize_int8(scramble(model, seed=2, std=0.1))
    source, lengths = make_sources([3, 9, 5, 7], model.config.src_vocab_size)
    target_in = torch.randint(4, model.config.tgt_vocab_size, (4, 6))
    with torch.inference_mode():
        together, _ = model(source, lengths, target_in)
        for row, length in enumerate(lengths.tolist()):
            alone, _ = model(source[row : row + 1, :length], lengths[row : row + 1], target_in[row : row + 1])
            assert torch.equal(alone[0], together[row]), row
            pair = [row, (row + 1) % 4]
            with_another, _ = model(source[pair], lengths[pair], target_in[pair])
            assert torch.equal(with_another[0], together[row]), row


@pytest.mark.parametrize("kind", ["luong", "bahdanau"])
def test_int8_attention_scores_of_a_sentence_are_the_same_alone_and_in_any_batch(kind, make_model):
    """A CPU matrix-vector kernel sums in an order that depends on the batch; the scores
    must not, or int8's rounding downstream turns a last-bit difference into another
    translation (a sentence of test2016 did: a server's batch and `mt translate` disagreed)."""
    model = quantize_int8(make_model(attention=kind, embedding_size=32, hidden_size=64))
    attention = model.decoder.attention
    torch.manual_seed(0)
    lengths = torch.tensor([13, 20, 5, 17, 9, 14])
    memory = torch.rand(6, 20, 64) * 2 - 1  # encoder outputs lie in [-1, 1]
    mask = torch.arange(20) < lengths[:, None]
    query = torch.rand(6, 64) * 2 - 1

    def scores(rows: list[int], length: int) -> torch.Tensor:
        keys = attention.keys(memory[rows, :length])
        return attention.scores(query[rows], EncoderOutput(memory[rows, :length], keys, mask[rows, :length]))

    with torch.inference_mode():
        together = scores(list(range(6)), 20)
        for row, length in enumerate(lengths.tolist()):
            assert torch.equal(scores([row], length)[0], together[row, :length]), row
            assert torch.equal(scores([row, (row + 1) % 6], 20)[0], together[row]), row
            assert torch.equal(scores(list(range(row + 1)), 20)[row], together[row]), row
