"""The encoder-decoder: shapes, padding invariance, source reversal, weight sharing."""

from __future__ import annotations

import pytest
import torch
from helpers import random_targets

import mt.model
from mt.config import ModelConfig, MTError
from mt.loss import label_smoothed_loss
from mt.model import Seq2Seq, reverse_padded

SRC_V, TGT_V, E, H = 17, 23, 8, 12


def test_forward_gives_logits_for_every_target_position(architecture, make_model, make_sources):
    model = make_model(**architecture)
    source, lengths = make_sources([5, 3, 7], SRC_V)
    target_in = random_targets([4, 6, 2], TGT_V)

    logits, attention = model(source, lengths, target_in)

    assert logits.shape == (3, 6, TGT_V)  # (B, T, V)
    assert torch.isfinite(logits).all()
    if architecture["attention"] == "none":
        assert attention is None
    else:
        assert attention.shape == (3, 6, 7)  # (B, T, S)
        assert torch.allclose(attention.sum(-1), torch.ones(3, 6), atol=1e-5)
        # No attention on source padding.
        for row, length in enumerate(lengths.tolist()):
            assert (attention[row, :, length:] == 0).all()


def test_every_parameter_gets_a_gradient(architecture, make_model, make_sources):
    # DistributedDataParallel needs it: an unused parameter would stall the gradient exchange.
    model = make_model(**architecture, tie_embeddings=False).train()
    source, lengths = make_sources([5, 3, 7], SRC_V)
    logits, _ = model(source, lengths, random_targets([4, 6, 2], TGT_V))
    logits.sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_decode_step_gives_log_probabilities(architecture, make_model, make_sources):
    model = make_model(**architecture)
    source, lengths = make_sources([5, 3], SRC_V)
    encoded, state = model.encode(source, lengths)
    assert encoded.memory.shape == (2, 5, H)

    log_probs, state, attention = model.decode_step(torch.full((2,), 2), state, encoded)
    log_probs, _, _ = model.decode_step(log_probs.argmax(-1), state, encoded)

    assert log_probs.shape == (2, TGT_V)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2), atol=1e-5)


def test_decode_steps_reproduce_teacher_forcing(architecture, make_model, make_sources):
    # Feeding the target one token at a time must give the same logits as the whole target at once.
    model = make_model(**architecture)
    source, lengths = make_sources([6], SRC_V)
    target_in = random_targets([5], TGT_V)
    logits, _ = model(source, lengths, target_in)

    encoded, state = model.encode(source, lengths)
    for t in range(target_in.size(1)):
        log_probs, state, _ = model.decode_step(target_in[:, t], state, encoded)
        assert torch.allclose(log_probs, torch.log_softmax(logits[:, t], -1), atol=1e-5)


def test_padding_does_not_change_a_sentences_logits(architecture, make_model, make_sources):
    model = make_model(**architecture)
    source, lengths = make_sources([4, 9], SRC_V, seed=3)  # the short sentence first
    target_in = random_targets([3, 8], TGT_V, seed=4)

    with torch.no_grad():
        batched, batched_attention = model(source, lengths, target_in)
        alone, alone_attention = model(source[:1, :4], lengths[:1], target_in[:1, :3])

    assert torch.allclose(batched[0, :3], alone[0], atol=1e-5)
    if alone_attention is not None:
        assert torch.allclose(batched_attention[0, :3, :4], alone_attention[0], atol=1e-5)


def test_padding_does_not_change_a_sentences_loss(make_model, make_sources):
    model = make_model(attention="luong", bidirectional=True)
    source, lengths = make_sources([4, 9], SRC_V, seed=3)
    target_in = random_targets([3, 8], TGT_V, seed=4)
    target_out = torch.cat([target_in[:, 1:], torch.zeros(2, 1, dtype=torch.long)], 1)
    target_out[0, 2], target_out[1, 7] = 3, 3

    with torch.no_grad():
        logits, _ = model(source, lengths, target_in)
        alone_logits, _ = model(source[:1, :4], lengths[:1], target_in[:1, :3])
    # Scoring only the short sentence's rows of the batch = scoring it alone.
    batched_loss = label_smoothed_loss(logits[:1, :3], target_out[:1, :3], 0.0, 0)
    alone_loss = label_smoothed_loss(alone_logits, target_out[:1, :3], 0.0, 0)
    assert torch.allclose(batched_loss, alone_loss, atol=1e-5)


@pytest.mark.parametrize("trailing", [(), (5,)], ids=["2d", "3d"])
def test_reverse_padded_reverses_real_tokens_and_keeps_padding(trailing):
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(4, 6, *trailing)
    mask = torch.arange(6)[None, :] < lengths[:, None]  # (B, S)
    if trailing:
        x[~mask] = 0.0
    else:
        x = x.masked_fill(~mask, 0.0)

    reversed_x = reverse_padded(x, lengths)

    for row, length in enumerate(lengths.tolist()):
        assert torch.equal(reversed_x[row, :length], x[row, :length].flip(0))
        assert torch.equal(reversed_x[row, length:], x[row, length:])
    assert torch.equal(reverse_padded(reversed_x, lengths), x)


def test_reverse_padded_twice_is_identity_for_integer_ids():
    ids = torch.tensor([[5, 6, 7, 3, 0, 0], [8, 9, 10, 11, 12, 3], [13, 3, 0, 0, 0, 0]])
    lengths = torch.tensor([4, 6, 2])
    once = reverse_padded(ids, lengths)
    assert once.tolist() == [[3, 7, 6, 5, 0, 0], [3, 12, 11, 10, 9, 8], [3, 13, 0, 0, 0, 0]]
    assert torch.equal(reverse_padded(once, lengths), ids)


def test_reverse_source_changes_what_the_encoder_reads(make_model, make_sources):
    source, lengths = make_sources([6, 4], SRC_V)
    forward_model = make_model(reverse_source=False)
    reversed_model = make_model(reverse_source=True)  # same seed: same weights
    reversed_model.load_state_dict(forward_model.state_dict())
    _, forward_state = forward_model.encoder(source, lengths)
    _, reversed_state = reversed_model.encoder(reverse_padded(source, lengths), lengths)
    # Reading the reversed source forwards = reading the source reversed.
    assert torch.allclose(forward_state[0], reversed_state[0], atol=1e-6)
    _, plain_state = reversed_model.encoder(source, lengths)
    assert not torch.allclose(forward_state[0], plain_state[0], atol=1e-3)


def test_tied_embeddings_use_the_target_embedding_as_output_layer(make_model, make_sources):
    model = make_model(tie_embeddings=True)
    decoder = model.decoder
    assert not any(p.shape == (TGT_V, H) for p in model.parameters())  # no separate output matrix
    features = torch.randn(2, H)
    expected = torch.nn.functional.linear(decoder.readout(features), decoder.embedding.weight, decoder.output_bias)
    assert torch.allclose(decoder.logits(features), expected)

    # The output layer's gradient reaches embedding rows of tokens never fed as input.
    source, lengths = make_sources([5], SRC_V)
    target_in = torch.tensor([[2, 5]])
    logits, _ = model(source, lengths, target_in)
    logits[..., 20].sum().backward()
    assert decoder.embedding.weight.grad[20].abs().sum() > 0


def test_untied_model_has_its_own_output_layer(make_model):
    model = make_model(tie_embeddings=False)
    assert model.decoder.readout.weight.shape == (TGT_V, H)
    assert model.decoder.output_bias is None


def test_share_embeddings_makes_encoder_and_decoder_embedding_one_module(make_model):
    shared = make_model(src_vocab_size=TGT_V, tgt_vocab_size=TGT_V, share_embeddings=True)
    assert shared.encoder.embedding is shared.decoder.embedding
    separate = make_model(src_vocab_size=TGT_V, tgt_vocab_size=TGT_V, share_embeddings=False)
    assert separate.encoder.embedding is not separate.decoder.embedding
    assert shared.num_parameters() == separate.num_parameters() - TGT_V * E


def test_share_embeddings_needs_one_vocabulary():
    with pytest.raises(MTError, match="joint"):
        ModelConfig(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, share_embeddings=True)


def test_padding_embedding_starts_at_zero(make_model):
    model = make_model()
    assert (model.encoder.embedding.weight[0] == 0).all()
    assert (model.decoder.embedding.weight[0] == 0).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_forget_gate_bias_starts_at_one(make_model, bidirectional):
    model = make_model(cell="lstm", attention="luong", bidirectional=bidirectional)
    for rnn in (model.encoder.rnn, model.decoder.rnn):
        hidden = rnn.hidden_size
        directions = ("", "_reverse") if rnn.bidirectional else ("",)
        suffixes = [f"_l{layer}{direction}" for layer in range(rnn.num_layers) for direction in directions]
        for suffix in suffixes:
            bias = getattr(rnn, f"bias_ih{suffix}") + getattr(rnn, f"bias_hh{suffix}")  # (4H,)
            forget_gate = bias[hidden : 2 * hidden]  # torch's gate order: input, forget, cell, output
            assert torch.allclose(forget_gate, torch.ones(hidden))
            # The other gates keep their random initialisation.
            assert not torch.allclose(bias[:hidden], torch.ones(hidden))


def test_model_config_rejects_invalid_values():
    with pytest.raises(MTError, match="even"):
        ModelConfig(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, hidden_size=13, bidirectional=True)
    with pytest.raises(MTError, match="cell"):
        ModelConfig(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, cell="transformer")


def test_model_config_round_trips_through_a_dict():
    config = ModelConfig(src_vocab_size=SRC_V, tgt_vocab_size=TGT_V, cell="gru", attention="bahdanau")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(MTError, match="unknown"):
        ModelConfig.from_dict({**config.to_dict(), "heads": 8})


class _Reached(Exception):
    """Raised by a stand-in to say which path the encoder took, before any kernel runs."""


@pytest.mark.parametrize("amx", [True, False], ids=["amx", "no-amx"])
@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp32"])
def test_the_encoder_trains_over_held_padding_in_bf16_on_amx_cpus_only(monkeypatch, amx, bf16):
    def reached(path):
        def stand_in(*args, **kwargs):
            raise _Reached(path)

        return stand_in

    monkeypatch.setattr(mt.model, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(mt.model, "run_fused_held", reached("held"))
    monkeypatch.setattr(mt.model, "pack_padded_sequence", reached("packed"))
    model = Seq2Seq(
        ModelConfig(src_vocab_size=20, tgt_vocab_size=20, embedding_size=8, hidden_size=8, bidirectional=True)
    )
    source, lengths = torch.randint(4, 20, (3, 5)), torch.tensor([5, 3, 2])
    for training in (True, False):
        model.train(training)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), pytest.raises(_Reached) as path:
            model.encoder(source, lengths)
        assert str(path.value) == ("held" if training and bf16 and amx else "packed")
