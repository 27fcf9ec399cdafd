"""Greedy and beam search: invariants on random tiny models, and a tiny model
that learns a handful of sentence pairs by heart."""

from __future__ import annotations

import pytest
import torch
from helpers import scramble

from mt.config import DecodeConfig, ModelConfig
from mt.data import collate, source_tensors
from mt.loss import label_smoothed_loss
from mt.model import Seq2Seq
from mt.search import beam_search, greedy_search, length_penalty, max_output_lengths, search

SRC_V = 17
SOURCE_LENGTHS = [3, 7, 5, 2, 9]  # several sentences of different lengths, in one batch


def set_eos_bias(model: Seq2Seq, value: float) -> Seq2Seq:
    """Make eos more (value > 0) or less (value < 0) likely at every step."""
    decoder = model.decoder
    bias = decoder.output_bias if decoder.output_bias is not None else decoder.readout.bias
    with torch.no_grad():
        bias[model.config.eos_id] = value
    return model


def sequence_log_probability(
    model: Seq2Seq, source: torch.Tensor, length: int, tokens: list[int], ended: bool
) -> float:
    """Teacher-forced log-probability of `tokens` (and eos when `ended`) for one source (1, S)."""
    config = model.config
    target_in = torch.tensor([[config.bos_id, *tokens]])[:, : len(tokens) + (1 if ended else 0)]
    target_out = torch.tensor([[*tokens, config.eos_id]])[:, : target_in.size(1)]
    with torch.no_grad():
        logits, _ = model(source, torch.tensor([length]), target_in)
    log_probs = torch.log_softmax(logits.double(), -1).gather(2, target_out[:, :, None])
    return float(log_probs.sum())


def test_beam_of_one_equals_greedy(architecture, make_model, make_sources):
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V, seed=2)
    decode = DecodeConfig(beam_size=1, max_length_ratio=1.0, max_length_offset=3)
    models = [make_model(seed=1, **architecture)]
    models += [scramble(make_model(tgt_vocab_size=8, **architecture), seed) for seed in range(3)]

    for model in models:
        greedy = greedy_search(model, source, lengths, decode)
        beam = beam_search(model, source, lengths, decode)
        assert [h[0].tokens for h in beam] == [h[0].tokens for h in greedy]


def test_search_with_beam_one_is_greedy(make_model, make_sources):
    model = make_model(attention="luong")
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V)
    decode = DecodeConfig(beam_size=1)
    assert search(model, source, lengths, decode) == greedy_search(model, source, lengths, decode)


def test_greedy_translation_does_not_depend_on_the_batch(architecture, make_model, make_sources):
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V, seed=4)
    decode = DecodeConfig(beam_size=1, max_length_ratio=1.0, max_length_offset=3)
    for seed in range(2):
        model = scramble(make_model(tgt_vocab_size=8, **architecture), seed)
        batched = greedy_search(model, source, lengths, decode)
        for row, length in enumerate(SOURCE_LENGTHS):
            (alone,) = greedy_search(model, source[row : row + 1, :length], lengths[row : row + 1], decode)
            assert alone[0].tokens == batched[row][0].tokens


@pytest.mark.parametrize("tie_embeddings", [True, False])
@pytest.mark.parametrize("beam_size", [1, 4])
def test_search_stops_at_eos(make_model, make_sources, tie_embeddings, beam_size):
    model = set_eos_bias(make_model(attention="bahdanau", tie_embeddings=tie_embeddings), 100.0)
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V)
    hypotheses = search(model, source, lengths, DecodeConfig(beam_size=beam_size))
    assert [h[0].tokens for h in hypotheses] == [[] for _ in SOURCE_LENGTHS]


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("ratio, offset", [(1.5, 10), (1.0, 0), (0.5, 2), (0.1, 0)])
def test_output_never_exceeds_max_output_lengths(make_model, make_sources, beam_size, ratio, offset):
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V)
    decode = DecodeConfig(beam_size=beam_size, max_length_ratio=ratio, max_length_offset=offset)
    limits = max_output_lengths(lengths, decode)
    assert all(limit >= 1 for limit in limits)

    for model in [make_model(attention="luong")] + [scramble(make_model(tgt_vocab_size=8), seed) for seed in range(3)]:
        for limit, hyps in zip(limits, search(model, source, lengths, decode, n_best=beam_size)):
            assert all(len(h.tokens) <= limit for h in hyps)

    # A model that never says eos runs until the limit, and no further.
    model = set_eos_bias(make_model(seed=5, attention="luong"), -100.0)
    for limit, hyps in zip(limits, search(model, source, lengths, decode, n_best=beam_size)):
        assert [len(h.tokens) for h in hyps] == [limit] * len(hyps)


def test_max_output_lengths_follows_the_ratio_and_offset():
    lengths = torch.tensor([1, 4, 10])
    assert max_output_lengths(lengths, DecodeConfig(max_length_ratio=1.5, max_length_offset=10)) == [11, 16, 25]
    assert max_output_lengths(lengths, DecodeConfig(max_length_ratio=0.1, max_length_offset=0)) == [1, 1, 1]


@pytest.mark.parametrize("n_best", [1, 2, 4])
def test_beam_search_returns_n_best_hypotheses_best_first(make_model, make_sources, n_best):
    model = scramble(make_model(cell="gru", attention="bahdanau", tgt_vocab_size=8), seed=6)
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V)
    decode = DecodeConfig(beam_size=4, max_length_ratio=1.0, max_length_offset=3)

    results = beam_search(model, source, lengths, decode, n_best=n_best)
    best = beam_search(model, source, lengths, decode, n_best=1)

    assert len(results) == len(SOURCE_LENGTHS)
    for hyps, (top,) in zip(results, best):
        assert len(hyps) == n_best
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert hyps[0] == top


def test_length_penalty_is_gnmt():
    assert length_penalty(7, 0.0) == 1.0
    assert length_penalty(1, 1.0) == 1.0
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(13, 0.5) == pytest.approx(3**0.5)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_hypothesis_score_is_its_length_penalised_log_probability(make_model, make_sources, beam_size, alpha):
    # Scores are sums of token log-probabilities divided by lp(n), n counting
    # the generated tokens including eos (the search module's docstring).
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V, seed=8)
    decode = DecodeConfig(beam_size=beam_size, length_penalty=alpha, max_length_ratio=1.0, max_length_offset=2)
    limits = max_output_lengths(lengths, decode)

    outcomes = []
    for seed, cell in enumerate(("lstm", "gru", "rnn")):
        model = scramble(make_model(cell=cell, attention="luong", tgt_vocab_size=8), seed)
        results = search(model, source, lengths, decode, n_best=beam_size)
        for row, (hyps, limit) in enumerate(zip(results, limits)):
            length = int(lengths[row])
            for h in hyps:
                ended = len(h.tokens) < limit  # else it was cut at the limit without eos
                outcomes.append(ended)
                log_prob = sequence_log_probability(model, source[row : row + 1, :length], length, h.tokens, ended)
                generated = len(h.tokens) + (1 if ended else 0)
                assert h.score == pytest.approx(log_prob / length_penalty(generated, alpha), rel=1e-3, abs=1e-3), (
                    f"sentence {row} of {len(limits)} (limit {limit}): {len(h.tokens)} tokens, ended with eos: {ended}"
                )
    assert any(outcomes) and not all(outcomes)  # both kinds of hypotheses were checked


# -- learning ------------------------------------------------------------------


OVERFIT_PAIRS = (0, 17, 45, 62, 83)  # indices into the conftest corpus, one per template and then some


LEARNERS = [
    {"cell": "lstm", "attention": "none", "bidirectional": False},
    {"cell": "lstm", "attention": "luong", "bidirectional": False},
    {"cell": "lstm", "attention": "bahdanau", "bidirectional": True},
    {"cell": "gru", "attention": "none", "bidirectional": True},
    {"cell": "rnn", "attention": "luong", "bidirectional": False},
]


@pytest.mark.parametrize(
    "options", LEARNERS, ids=[f"{o['cell']}-{o['attention']}-{'bi' if o['bidirectional'] else 'uni'}" for o in LEARNERS]
)
def test_tiny_model_learns_a_few_pairs_by_heart(tokenizers, corpus_pairs, options):
    pairs = [corpus_pairs[i] for i in OVERFIT_PAIRS]
    source = tokenizers.source.encode([de for de, _ in pairs])
    target = tokenizers.target.encode([en for _, en in pairs])
    vocab = tokenizers.source.vocab_size
    config = ModelConfig(
        src_vocab_size=vocab,
        tgt_vocab_size=vocab,
        embedding_size=32,
        hidden_size=64,
        num_layers=1,
        dropout=0.0,
        **options,
    )
    torch.manual_seed(0)
    model = Seq2Seq(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = collate(source, target, config.pad_id, config.bos_id, config.eos_id)
    test_source, test_lengths = source_tensors(source, config.pad_id, config.eos_id)
    decode = DecodeConfig(beam_size=1)

    # A moderate learning rate, clipped as in training: with lr 1e-2 unclipped the plain RNN's
    # steps are chaotic, and whether it converged in time depended on how the kernels round.
    translations: list[list[int]] = []
    for step in range(1, 2001):
        model.train()
        logits, _ = model(batch.source, batch.source_lengths, batch.target_in)
        loss = label_smoothed_loss(logits, batch.target_out, 0.0, config.pad_id)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 20 == 0:
            model.eval()
            translations = [h[0].tokens for h in greedy_search(model, test_source, test_lengths, decode)]
            if translations == target:
                break

    assert tokenizers.target.decode(translations) == [en for _, en in pairs]


def test_beam_wider_than_the_vocabulary_still_returns_k_hypotheses(make_model, make_sources):
    model = make_model(tgt_vocab_size=8)
    source, lengths = make_sources([5, 3], model.config.src_vocab_size)
    results = beam_search(
        model, source, lengths, DecodeConfig(beam_size=10, max_length_ratio=1.0, max_length_offset=2), n_best=10
    )
    assert all(len(hypotheses) == 10 for hypotheses in results)
    assert all(a.score >= b.score for hypotheses in results for a, b in zip(hypotheses, hypotheses[1:]))


# -- sampling ------------------------------------------------------------------


def test_sampling_near_temperature_zero_equals_greedy(make_model, make_sources):
    model = scramble(make_model(attention="luong"), seed=3, std=0.5)
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V)
    decode = DecodeConfig(beam_size=1, max_length_offset=4)
    greedy = greedy_search(model, source, lengths, decode)
    cold = search(model, source, lengths, DecodeConfig(max_length_offset=4, sampling=True, temperature=1e-8, seed=5))
    assert [h[0].tokens for h in cold] == [h[0].tokens for h in greedy]
    assert [h[0].score for h in cold] == pytest.approx([h[0].score for h in greedy], abs=1e-5)


def test_sampling_from_the_top_one_token_equals_greedy(make_model, make_sources):
    model = scramble(make_model(), seed=4, std=0.5)
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V)
    greedy = greedy_search(model, source, lengths, DecodeConfig(beam_size=1, max_length_offset=4))
    top1 = search(
        model, source, lengths, DecodeConfig(max_length_offset=4, sampling=True, top_k=1, temperature=3.0), n_best=3
    )
    for samples, (best,) in zip(top1, greedy):
        assert len(samples) == 3 and all(sample.tokens == best.tokens for sample in samples)


def test_samples_are_reproducible_with_a_seed_and_differ_between_seeds(make_model, make_sources):
    model = scramble(make_model(), seed=5, std=0.5)
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V)

    def draw(seed: int) -> list[list[list[int]]]:
        decode = DecodeConfig(max_length_offset=4, sampling=True, temperature=2.0, seed=seed)
        return [[h.tokens for h in hyps] for hyps in search(model, source, lengths, decode, n_best=4)]

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    assert all(len(samples) == 4 for samples in draw(1))


def test_nucleus_sampling_draws_only_from_the_smallest_set_reaching_top_p():
    log_probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(2000, 4)
    generator = torch.Generator().manual_seed(0)
    from mt.search import sample_tokens

    drawn = sample_tokens(log_probs, 1.0, 0, 0.7, generator)
    assert set(drawn.tolist()) == {0, 1}  # 0.5 + 0.3 reach 0.7; 0.15 and 0.05 are cut
    assert set(sample_tokens(log_probs, 1.0, 3, 1.0, generator).tolist()) == {0, 1, 2}  # top-k 3


# -- ensembles -----------------------------------------------------------------


@pytest.mark.parametrize("beam_size", [1, 3])
def test_an_ensemble_of_two_identical_models_searches_as_one(make_model, make_sources, beam_size):
    from mt.model import Ensemble

    model = scramble(make_model(attention="bahdanau", bidirectional=True), seed=6, std=0.5)
    twin = scramble(make_model(attention="bahdanau", bidirectional=True), seed=6, std=0.5)
    source, lengths = make_sources(SOURCE_LENGTHS, SRC_V)
    decode = DecodeConfig(beam_size=beam_size, max_length_offset=4)
    alone = search(model, source, lengths, decode, n_best=beam_size)
    together = search(Ensemble([model, twin]), source, lengths, decode, n_best=beam_size)
    assert [[h.tokens for h in hyps] for hyps in together] == [[h.tokens for h in hyps] for hyps in alone]
    for a, b in zip(alone, together):
        assert [h.score for h in b] == pytest.approx([h.score for h in a], abs=1e-5)


def test_an_ensemble_of_models_with_different_target_vocabularies_is_refused(make_model):
    from mt.config import MTError
    from mt.model import Ensemble

    with pytest.raises(MTError, match="one target vocabulary"):
        Ensemble([make_model(tgt_vocab_size=23), make_model(tgt_vocab_size=29)])
