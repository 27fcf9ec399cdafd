"""Greedy search, sampling and beam search over the model's step function.

Greedy search and sampling share one step loop (`_token_by_token`) and differ
in how a token is chosen; beam search keeps K hypotheses per sentence. All
search a whole batch of sentences at once and return, for each sentence, its
hypotheses best first. Scores are sums of token
log-probabilities divided by the GNMT length penalty
lp(n) = ((5 + n) / 6) ** alpha (Wu et al. 2016), where n counts the
generated tokens including eos; alpha = 0 ranks by raw log-probability.

Beam search state, for the n sentences still searching (finished sentences
leave the batch):
    scores   (n, K)     cumulative log-probability of each live beam
    history  (n*K, t)   tokens generated so far by each live beam
    previous (n*K,)     the last token of each beam, fed to the next step
    state, encoded      the model's state and encoder output, one row per beam
    finished            per sentence, hypotheses that ended with eos or hit the length limit
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mt.config import DecodeConfig
from mt.model import Seq2Seq


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # without bos and eos
    score: float  # length-penalised log-probability


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(lengths: torch.Tensor, config: DecodeConfig) -> list[int]:
    """The longest output allowed for each source length (B,), at least one token."""
    return [max(1, int(n * config.max_length_ratio) + config.max_length_offset) for n in lengths.tolist()]


def sample_tokens(
    log_probs: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """log_probs (R, V) -> one token per row (R,), drawn from the distribution
    sharpened or flattened by `temperature`, cut to the `top_k` most likely tokens
    (0: all) and to the smallest set whose probability reaches `top_p` (nucleus
    sampling, Holtzman et al. 2020)."""
    logits = log_probs / temperature  # (R, V)
    if top_k:
        kth_best = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)  # (R, V)
        probabilities = torch.softmax(ordered, dim=-1)
        outside = probabilities.cumsum(dim=-1) - probabilities >= top_p  # mass before this token already reaches p
        logits = logits.scatter(-1, order, ordered.masked_fill(outside, float("-inf")))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)


def _token_by_token(
    model: Seq2Seq,
    source: torch.Tensor,
    lengths: torch.Tensor,
    config: DecodeConfig,
    n: int,
    choose: Callable[[torch.Tensor], torch.Tensor],
) -> list[list[Hypothesis]]:
    """The step loop of greedy search and sampling: `n` rows per sentence, each
    extended by the token `choose` picks from its log-probabilities (R, V) until eos
    or the length limit. Scores are the model's own log-probabilities of the tokens."""
    eos, device = model.config.eos_id, source.device
    encoded, state = model.encode(source, lengths)
    if n > 1:
        rows = torch.arange(source.size(0), device=device).repeat_interleave(n)  # (B*n,)
        encoded, state, lengths = encoded.select(rows), state.select(rows), lengths.index_select(0, rows)
    count = lengths.size(0)
    limits = torch.tensor(max_output_lengths(lengths, config), device=device)  # (R,)
    previous = torch.full((count,), model.config.bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(count, dtype=torch.bool, device=device)
    generated = torch.zeros(count, dtype=torch.long, device=device)  # tokens each row produced, eos included
    steps, scores = [], torch.zeros(count, device=device)
    for t in range(int(limits.max())):
        log_probs, state, _ = model.decode_step(previous, state, encoded)  # (R, V)
        previous = choose(log_probs)  # (R,)
        generated += (~finished).long()
        scores += log_probs.gather(1, previous[:, None]).squeeze(1).masked_fill(finished, 0.0)
        steps.append(previous.masked_fill(finished, eos))
        finished |= (previous == eos) | (t + 1 >= limits)
        if bool(finished.all()):
            break
    tokens = torch.stack(steps, dim=1).tolist()  # (R, t)
    hypotheses = []
    for row, score, length in zip(tokens, scores.tolist(), generated.tolist()):
        output = row[:length]
        if output[-1] == eos:
            output = output[:-1]
        hypotheses.append(Hypothesis(output, score / length_penalty(length, config.length_penalty)))
    return [sorted(hypotheses[i : i + n], key=lambda h: h.score, reverse=True) for i in range(0, count, n)]


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, config: DecodeConfig
) -> list[list[Hypothesis]]:
    """source (B, S), lengths (B,) -> one hypothesis per sentence: the most likely token at every step."""
    return _token_by_token(model, source, lengths, config, 1, lambda log_probs: log_probs.argmax(dim=-1))


@torch.inference_mode()
def sample(
    model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, config: DecodeConfig, n: int = 1
) -> list[list[Hypothesis]]:
    """source (B, S), lengths (B,) -> `n` samples per sentence, best first, drawn with
    `config.temperature`, `top_k` and `top_p`; the same `config.seed` and input give the same samples."""
    generator = torch.Generator(device=source.device).manual_seed(config.seed)
    return _token_by_token(
        model,
        source,
        lengths,
        config,
        n,
        lambda log_probs: sample_tokens(log_probs, config.temperature, config.top_k, config.top_p, generator),
    )


@torch.inference_mode()
def beam_search(
    model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, config: DecodeConfig, n_best: int = 1
) -> list[list[Hypothesis]]:
    """source (B, S), lengths (B,) -> the `n_best` best hypotheses of each sentence, best first.

    Each step extends every live beam by every token, keeps the 2K best
    candidates, moves those ending in eos (among the top K) to `finished`,
    and continues with the K best that do not end in eos. A sentence is done
    when it has K finished hypotheses or reaches its length limit.
    """
    k = config.beam_size
    eos, device = model.config.eos_id, source.device
    batch = source.size(0)
    encoded, state = model.encode(source, lengths)
    beams = torch.arange(batch, device=device).repeat_interleave(k)  # (B*K,)
    encoded, state = encoded.select(beams), state.select(beams)
    limits = max_output_lengths(lengths, config)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: only the first is live
    history = torch.empty((batch * k, 0), dtype=torch.long, device=device)
    previous = torch.full((batch * k,), model.config.bos_id, dtype=torch.long, device=device)
    searching = list(range(batch))  # original index of each sentence still in the batch
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    rank = torch.arange(2 * k, device=device)

    for t in range(max(limits)):
        n = len(searching)
        log_probs, state, _ = model.decode_step(previous, state, encoded)  # (n*K, V)
        # The 2K best candidates of a sentence are among the 2K best tokens of each
        # of its beams: rank per beam first, then only K*2K candidates per sentence.
        width = min(2 * k, log_probs.size(-1))
        beam_log_probs, beam_tokens = log_probs.topk(width, dim=1)  # (n*K, 2K)
        candidates = (scores[:, :, None] + beam_log_probs.view(n, k, width)).view(n, k * width)  # (n, K*2K)
        top_scores, top_index = candidates.topk(min(2 * k, k * width), dim=1)  # (n, 2K)
        origin = top_index // width  # (n, 2K) beam of each candidate
        token = beam_tokens.view(n, k * width).gather(1, top_index)  # (n, 2K)
        is_eos = token == eos
        penalty = length_penalty(t + 1, config.length_penalty)

        for i, r in (is_eos[:, :k] & torch.isfinite(top_scores[:, :k])).nonzero().tolist():
            finished[searching[i]].append(
                Hypothesis(history[i * k + origin[i, r]].tolist(), float(top_scores[i, r]) / penalty)
            )

        # Continue with the K best candidates that do not end in eos.
        keep = (is_eos.long() * rank.numel() + rank[: is_eos.size(1)]).argsort(dim=1)[:, :k]  # (n, K)
        scores = top_scores.gather(1, keep)
        rows = (torch.arange(n, device=device)[:, None] * k + origin.gather(1, keep)).view(-1)  # (n*K,)
        previous = token.gather(1, keep).view(-1)
        history = torch.cat([history[rows], previous[:, None]], dim=1)
        state = state.select(rows)  # the encoder output needs no reordering: a sentence's beams share it

        done = _sentences_done(searching, [t + 1 >= limits[s] for s in searching], scores, history, finished, penalty)
        if all(done):
            break
        if any(done):
            live = torch.tensor([not d for d in done], device=device)
            live_rows = live.repeat_interleave(k).nonzero().squeeze(1)
            searching = [s for s, d in zip(searching, done) if not d]
            scores, history, previous = scores[live], history[live_rows], previous[live_rows]
            state, encoded = state.select(live_rows), encoded.select(live_rows)

    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in finished]


def _sentences_done(
    searching: list[int],
    at_limit: list[bool],
    scores: torch.Tensor,
    history: torch.Tensor,
    finished: list[list[Hypothesis]],
    penalty: float,
) -> list[bool]:
    """Which sentences of the beam search stop now: those `at_limit` of their length
    (their live beams, scores (n, K), join `finished` as they are) and those with K
    finished hypotheses."""
    k = scores.size(1)
    done = []
    for i, (sentence, limit) in enumerate(zip(searching, at_limit)):
        if limit:
            for j in range(k):
                if torch.isfinite(scores[i, j]):
                    finished[sentence].append(Hypothesis(history[i * k + j].tolist(), float(scores[i, j]) / penalty))
        done.append(limit or len(finished[sentence]) >= k)
    return done


def search(
    model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, config: DecodeConfig, n_best: int = 1
) -> list[list[Hypothesis]]:
    """Sampling (`n_best` samples) when `config.sampling`; else greedy search for
    beam size 1 and beam search otherwise. `model` may be an Ensemble."""
    if config.sampling:
        return sample(model, source, lengths, config, n_best)
    if config.beam_size == 1:
        return greedy_search(model, source, lengths, config)
    return beam_search(model, source, lengths, config, n_best=n_best)
