"""Greedy and beam search over the model's step function.

Both search a whole batch of sentences at once and return, for each
sentence, its hypotheses best first. Scores are sums of token
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


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, config: DecodeConfig
) -> list[list[Hypothesis]]:
    """source (B, S), lengths (B,) -> one hypothesis per sentence: the most likely token at every step."""
    eos = model.config.eos_id
    batch = source.size(0)
    encoded, state = model.encode(source, lengths)
    limits = torch.tensor(max_output_lengths(lengths, config), device=source.device)  # (B,)
    previous = torch.full((batch,), model.config.bos_id, dtype=torch.long, device=source.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=source.device)
    generated = torch.zeros(
        batch, dtype=torch.long, device=source.device
    )  # tokens each sentence produced, eos included
    steps, scores = [], torch.zeros(batch, device=source.device)
    for t in range(int(limits.max())):
        log_probs, state, _ = model.decode_step(previous, state, encoded)  # (B, V)
        best_log_prob, previous = log_probs.max(dim=-1)  # (B,), (B,)
        generated += (~finished).long()
        scores += best_log_prob.masked_fill(finished, 0.0)
        steps.append(previous.masked_fill(finished, eos))
        finished |= (previous == eos) | (t + 1 >= limits)
        if bool(finished.all()):
            break
    tokens = torch.stack(steps, dim=1).tolist()  # (B, t)
    results = []
    for row, score, length in zip(tokens, scores.tolist(), generated.tolist()):
        output = row[:length]
        if output[-1] == eos:
            output = output[:-1]
        results.append([Hypothesis(output, score / length_penalty(length, config.length_penalty))])
    return results


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

        done = []
        for i, sentence in enumerate(searching):
            at_limit = t + 1 >= limits[sentence]
            if at_limit:
                for j in range(k):
                    if torch.isfinite(scores[i, j]):
                        finished[sentence].append(
                            Hypothesis(history[i * k + j].tolist(), float(scores[i, j]) / penalty)
                        )
            done.append(at_limit or len(finished[sentence]) >= k)
        if all(done):
            break
        if any(done):
            live = torch.tensor([not d for d in done], device=device)
            live_rows = live.repeat_interleave(k).nonzero().squeeze(1)
            searching = [s for s, d in zip(searching, done) if not d]
            scores, history, previous = scores[live], history[live_rows], previous[live_rows]
            state, encoded = state.select(live_rows), encoded.select(live_rows)

    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in finished]


def search(
    model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, config: DecodeConfig, n_best: int = 1
) -> list[list[Hypothesis]]:
    """Greedy search for beam size 1, beam search otherwise."""
    if config.beam_size == 1:
        return greedy_search(model, source, lengths, config)
    return beam_search(model, source, lengths, config, n_best=n_best)
