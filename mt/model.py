"""The encoder-decoder: an RNN encoder compresses the source, an RNN decoder
generates the target from it (Sutskever, Vinyals & Le 2014).

Shape legend, used in every comment of the package:
    B batch, S source length, T target length, E embedding size,
    H hidden size, V vocabulary size, L layers, K beam size.

With `attention="none"` (the design's model) the encoder's final state is the
decoder's only view of the source. With attention the decoder also reads
every encoder output at every step (Bahdanau et al. 2015, Luong et al. 2015)
and feeds its attentional vector back in as input (input feeding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mt.cells import CELL_TYPES, ReferenceRNN, UnrolledRNN, reverse_padded, run_fused_held
from mt.config import AttentionKind, Cell, CellImpl, ModelConfig, MTError

# A recurrent state: (hidden_state, cell_state) for an LSTM, hidden_state
# alone for GRU and plain RNN cells; each tensor is (L, B, H).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX (Intel's matrix tiles), as torch's cpuinfo says; asked once."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.13
    return bool(probe is not None and probe())


def map_state(state: State, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


def make_rnn(config: ModelConfig, input_size: int, hidden_size: int, bidirectional: bool) -> nn.Module:
    """The recurrent layers: torch's fused kernels, or the lecture's equations (`cell_impl="reference"`)."""
    options = dict(
        num_layers=config.num_layers,
        dropout=config.dropout if config.num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )
    if config.cell_impl == CellImpl.reference:
        rnn = ReferenceRNN(config.cell, input_size, hidden_size, **options)
    else:
        rnn = CELL_TYPES[config.cell].fused(input_size, hidden_size, batch_first=True, **options)
    if config.cell == Cell.lstm:
        init_forget_gate_bias(rnn)
    return rnn


def init_forget_gate_bias(rnn: nn.Module, value: float = 1.0) -> None:
    """Start an LSTM's forget gates open (bias 1) so that the cell state, and
    its gradient, are carried across many steps from the first update on
    (Gers et al. 2000; Jozefowicz et al. 2015)."""
    for name, bias in rnn.named_parameters():
        if name.startswith("bias_ih"):
            hidden = bias.size(0) // 4  # gate order in torch: input, forget, cell, output
            with torch.no_grad():
                bias[hidden : 2 * hidden].fill_(value)
        elif name.startswith("bias_hh"):
            hidden = bias.size(0) // 4
            with torch.no_grad():
                bias[hidden : 2 * hidden].zero_()


@dataclass
class EncoderOutput:
    """What the decoder may read of the source."""

    memory: torch.Tensor  # (B, S, H) encoder outputs, in source order
    keys: torch.Tensor | None  # (B, S, H) attention keys precomputed from memory, or None
    mask: torch.Tensor  # (B, S) True at real tokens

    def select(self, index: torch.Tensor) -> EncoderOutput:
        """Rows `index` of every tensor (to expand or reorder beams)."""
        keys = None if self.keys is None else self.keys.index_select(0, index)
        return EncoderOutput(self.memory.index_select(0, index), keys, self.mask.index_select(0, index))

    @cached_property
    def real(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The real (not padding) positions: row and position indices (N,) each, and
        their keys (N, H); computed once, read at every decoder step."""
        rows, positions = self.mask.nonzero(as_tuple=True)
        return rows, positions, self.keys[rows, positions]


@dataclass
class DecoderState:
    """The decoder's recurrent state and, with input feeding, the last attentional vector."""

    rnn: State  # (L, B, H) each
    feed: torch.Tensor | None  # (B, H)

    def select(self, index: torch.Tensor) -> DecoderState:
        feed = None if self.feed is None else self.feed.index_select(0, index)
        return DecoderState(map_state(self.rnn, lambda s: s.index_select(1, index)), feed)


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.reverse_source = config.reverse_source
        self.bidirectional = config.bidirectional
        self.cell = config.cell
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        directions = 2 if config.bidirectional else 1
        self.rnn = make_rnn(config, config.embedding_size, config.hidden_size // directions, config.bidirectional)
        # The bridge maps the two directions' final states onto the decoder's initial state.
        self.bridge = (
            nn.ModuleList(
                nn.Linear(config.hidden_size, config.hidden_size) for _ in range(CELL_TYPES[config.cell].states)
            )
            if config.bidirectional
            else None
        )

    def forward(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, State]:
        """source (B, S), lengths (B,) -> memory (B, S, H) in source order, final state (L, B, H)."""
        if self.reverse_source:  # Sutskever's trick: the first source words end up nearest the decoder
            source = reverse_padded(source, lengths)
        embedded = self.dropout(self.embedding(source))  # (B, S, E)
        if isinstance(self.rnn, UnrolledRNN):  # the reference cells and int8 layers take lengths, not packing
            memory, state = self.rnn(embedded, None, lengths)  # (B, S, H)
        elif self._fused_over_padding(embedded):
            memory, state = run_fused_held(self.rnn, self.cell, embedded, lengths)
        else:
            packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
            outputs, state = self.rnn(packed)
            memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source.size(1))  # (B, S, H)
        if self.reverse_source:
            memory = reverse_padded(memory, lengths)
        if self.bridge is not None:
            states = state if isinstance(state, tuple) else (state,)
            bridged = tuple(torch.tanh(linear(self._join_directions(s))) for linear, s in zip(self.bridge, states))
            state = bridged if isinstance(state, tuple) else bridged[0]
        return memory, state

    def _fused_over_padding(self, embedded: torch.Tensor) -> bool:
        """Whether to train on padded sequences (`run_fused_held`) rather than packed ones: on
        a CPU with AMX under bf16 autocast, where oneDNN's fused AMX kernel measured 1.5x
        torch's loop over a packed sequence. In fp32 oneDNN's kernel is the slower; CPUs
        without AMX keep the path measured on them (`docs/benchmarks.md`)."""
        device = embedded.device.type
        return (
            self.training
            and device == "cpu"
            and torch.is_autocast_enabled(device)
            and torch.get_autocast_dtype(device) == torch.bfloat16
            and CELL_TYPES[self.cell].hold is not None
            and cpu_has_amx()
        )

    @staticmethod
    def _join_directions(state: torch.Tensor) -> torch.Tensor:
        """(L * 2, B, H / 2) -> (L, B, H): forward and backward final states side by side."""
        layers2, batch, half = state.shape
        return state.view(layers2 // 2, 2, batch, half).permute(0, 2, 1, 3).reshape(layers2 // 2, batch, 2 * half)


class Attention(nn.Module):
    """Scores every encoder output m_s against the decoder's hidden state h_t and
    reads the source through the softmax of the scores. Subclasses define the scores."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """memory (B, S, H) -> keys (B, S, H); computed once per sentence."""
        return self.key(memory)

    def scores(self, query: torch.Tensor, source: EncoderOutput) -> torch.Tensor:
        """query (B, H) -> scores (B, S), -inf at padding."""
        raise NotImplementedError

    def forward(self, query: torch.Tensor, source: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, H) -> context (B, H), weights (B, S)."""
        weights = torch.softmax(self.scores(query, source), dim=-1)  # (B, S)
        context = torch.bmm(weights[:, None, :], source.memory).squeeze(1)  # (B, H)
        return context, weights


class LuongAttention(Attention):
    """Luong et al. 2015, "general": score(h_t, m_s) = h_t . (W_a m_s)."""

    def scores(self, query: torch.Tensor, source: EncoderOutput) -> torch.Tensor:
        # A product and a sum over H, not bmm: a CPU matrix-vector kernel sums in an order that
        # depends on the batch, and a sentence's scores must not (see `mt.quantize`).
        return (source.keys * query[:, None, :]).sum(dim=2).masked_fill(~source.mask, float("-inf"))


class BahdanauAttention(Attention):
    """Bahdanau et al. 2015, additive: score(h_t, m_s) = v . tanh(W_q h_t + W_k m_s)."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size)
        self.query = nn.Linear(hidden_size, hidden_size, bias=True)
        self.energy = nn.Linear(hidden_size, 1, bias=False)

    def scores(self, query: torch.Tensor, source: EncoderOutput) -> torch.Tensor:
        # Only the real positions are scored: in a batch of sentences of many lengths
        # (a server's), padding is often 40% of the (B, S) grid, and the squashing is the score's largest cost.
        rows, positions, keys = source.real  # (N,), (N,), (N, H)
        # v . tanh(z) as 2 v . sigmoid(2z) - sum(v), the same value (tanh(z) = 2 sigmoid(2z) - 1): on a CPU
        # torch's sigmoid is about 3x faster than its tanh (1.5 against 4.2 ms for 2.35 M values, AVX2).
        squashed = (keys + self.query(query).index_select(0, rows)).mul_(2).sigmoid_()  # (N, H)
        # v . s as a product and a sum over H, as in `LuongAttention.scores`: the same for a row in any batch.
        energy = 2 * (squashed * self.energy.weight).sum(dim=1) - self.energy.weight.sum()  # (N,)
        return energy.new_full(source.mask.shape, float("-inf")).index_put_((rows, positions), energy)


ATTENTION_CLASSES: dict[AttentionKind, type[Attention]] = {
    AttentionKind.luong: LuongAttention,
    AttentionKind.bahdanau: BahdanauAttention,
}


def make_attention(kind: AttentionKind, hidden_size: int) -> Attention | None:
    """The attention of `kind`, or None for the design's model (`none`)."""
    if kind == AttentionKind.none:
        return None
    if kind not in ATTENTION_CLASSES:
        raise MTError(f"unknown attention {kind!r}; known: {', '.join(map(str, ATTENTION_CLASSES))}")
    return ATTENTION_CLASSES[kind](hidden_size)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        hidden = config.hidden_size
        self.attention = make_attention(config.attention, hidden)
        feed_size = hidden if self.attention is not None else 0
        self.rnn = make_rnn(config, config.embedding_size + feed_size, hidden, bidirectional=False)
        # Attentional vector h~_t = tanh(W_c [c_t; h_t]) (Luong et al. 2015).
        self.combine = nn.Linear(2 * hidden, hidden, bias=False) if self.attention is not None else None
        # With tied embeddings the output layer reuses the target embedding
        # matrix, so the features are first projected down to E.
        self.tie_embeddings = config.tie_embeddings
        self.readout = nn.Linear(hidden, config.embedding_size if config.tie_embeddings else config.tgt_vocab_size)
        self.output_bias = nn.Parameter(torch.zeros(config.tgt_vocab_size)) if config.tie_embeddings else None
        self.quantized_output: nn.Module | None = None  # set by `quantize_int8`
        self.compiled_step: Callable | None = None  # set by `compile_step`

    def compile_step(self) -> None:
        """Train with the step loop's body compiled by torch.compile (`mt train --compile`).
        Inductor fuses the step's many small operations, forward and backward, and under
        bf16 autocast the casts between them; translation keeps the eager step. The LSTM's
        dropout between layers draws its masks another way (uniform numbers, not Bernoulli
        ones): the same distribution, not the same masks as the eager step's. Needs
        `mt.runtime.for_training(..., compile=True)`, which lets Dynamo trace the one-step nn.LSTM call."""
        self.compiled_step = torch.compile(self.step, dynamic=True)

    def output_layer(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """features (..., H) -> the V-way output layer's input (..., D), weight (V, D)
        and bias (V,): logits = input @ weight.T + bias (D is E when tied, else H)."""
        if self.tie_embeddings:
            return self.readout(self.dropout(features)), self.embedding.weight, self.output_bias
        return self.dropout(features), self.readout.weight, self.readout.bias

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., H) -> logits (..., V)."""
        if self.quantized_output is not None:  # int8 inference (`quantize_int8`)
            return self.quantized_output(self.output_layer(features)[0])
        return F.linear(*self.output_layer(features))

    def forward(
        self, target_in: torch.Tensor, state: DecoderState, source: EncoderOutput
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """target_in (B, T) -> features (B, T, H) for the output layer (the top RNN's
        outputs, or with attention the attentional vectors), the new state,
        attention weights (B, T, S) or None."""
        embedded = self.dropout(self.embedding(target_in))  # (B, T, E)
        if self.attention is None:
            # No attention, no input feeding: the whole target goes through the fused RNN at once.
            outputs, rnn_state = self.rnn(embedded, state.rnn)  # (B, T, H)
            return outputs, DecoderState(rnn_state, None), None
        rnn_state, feed = state.rnn, state.feed
        step = self.step
        if self.training and self.compiled_step is not None:
            step = self.compiled_step
            source.real  # noqa: B018  (Bahdanau's positions: a nonzero() is no graph's, so computed here)
        features, weights = [], []
        for t in range(target_in.size(1)):  # unrolled in time: each step reads the last attentional vector
            feed, rnn_state, step_weights = step(embedded[:, t], feed, rnn_state, source)
            features.append(feed)
            weights.append(step_weights)
        return torch.stack(features, 1), DecoderState(rnn_state, feed), torch.stack(weights, 1)

    def step(
        self, embedded: torch.Tensor, feed: torch.Tensor, rnn_state: State, source: EncoderOutput
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """One step with attention: embedded (B, E) and the last attentional vector feed
        (B, H) -> the new attentional vector (B, H), RNN state, attention weights (B, S)."""
        step_input = torch.cat([embedded, feed], dim=-1)[:, None, :]  # (B, 1, E + H)
        output, rnn_state = self.rnn(step_input, rnn_state)
        hidden = output[:, 0]  # (B, H)
        context, weights = self.attention(hidden, source)
        feed = torch.tanh(self.combine(torch.cat([context, hidden], dim=-1)))  # (B, H)
        return feed, rnn_state, weights


class Seq2Seq(nn.Module):
    """Encoder, decoder and the glue between them. Takes and returns tensors only."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        source_embedding = nn.Embedding(config.src_vocab_size, config.embedding_size, padding_idx=config.pad_id)
        target_embedding = (
            source_embedding
            if config.share_embeddings  # one joint vocabulary: one embedding matrix for both languages
            else nn.Embedding(config.tgt_vocab_size, config.embedding_size, padding_idx=config.pad_id)
        )
        # A tuple, not a set: the order of initialisation must not depend on object ids.
        for embedding in (source_embedding,) if config.share_embeddings else (source_embedding, target_embedding):
            nn.init.uniform_(embedding.weight, -0.1, 0.1)
            with torch.no_grad():
                embedding.weight[config.pad_id].zero_()
        self.encoder = Encoder(config, source_embedding)
        self.decoder = Decoder(config, target_embedding)

    def encode(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[EncoderOutput, DecoderState]:
        """source (B, S), lengths (B,) -> what the decoder reads, and its initial state."""
        memory, state = self.encoder(source, lengths)
        mask = source != self.config.pad_id  # (B, S)
        attention = self.decoder.attention
        keys = attention.keys(memory) if attention is not None else None
        feed = memory.new_zeros(source.size(0), self.config.hidden_size) if attention is not None else None
        return EncoderOutput(memory, keys, mask), DecoderState(state, feed)

    def forward(
        self, source: torch.Tensor, lengths: torch.Tensor, target_in: torch.Tensor, features: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: logits (B, T, V) of each next target token (with
        `features`, the output layer's features (B, T, H) instead, for a loss that
        applies the layer itself), and attention (B, T, S) or None."""
        encoded, state = self.encode(source, lengths)
        outputs, _, attention = self.decoder(target_in, state, encoded)
        return (outputs if features else self.decoder.logits(outputs)), attention

    def decode_step(
        self, previous: torch.Tensor, state: DecoderState, source: EncoderOutput
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """previous (B,) -> log-probabilities (B, V) of the next token, new state, attention (B, S) or None."""
        features, state, attention = self.decoder(previous[:, None], state, source)
        logits = self.decoder.logits(features[:, 0])  # (B, V)
        return torch.log_softmax(logits.float(), dim=-1), state, None if attention is None else attention[:, 0]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class EnsembleState:
    """One state (or encoder output) per member; `select` reorders them all alike."""

    members: tuple

    def select(self, index: torch.Tensor) -> EnsembleState:
        return EnsembleState(tuple(member.select(index) for member in self.members))


class Ensemble(nn.Module):
    """Several models of one vocabulary searched as one: each step's log-probabilities
    are the mean of the members' (B, V). Offers `encode` and `decode_step` as a
    Seq2Seq does, so every search strategy works on it unchanged."""

    def __init__(self, members: list[Seq2Seq]):
        super().__init__()
        first = members[0].config
        for member in members[1:]:
            config = member.config
            if (config.tgt_vocab_size, config.pad_id, config.bos_id, config.eos_id) != (
                first.tgt_vocab_size,
                first.pad_id,
                first.bos_id,
                first.eos_id,
            ):
                raise MTError("the models of an ensemble must share one target vocabulary")
        self.members = nn.ModuleList(members)
        self.config = first

    def encode(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[EnsembleState, EnsembleState]:
        encoded, states = zip(*(member.encode(source, lengths) for member in self.members))
        return EnsembleState(encoded), EnsembleState(states)

    def decode_step(
        self, previous: torch.Tensor, state: EnsembleState, source: EnsembleState
    ) -> tuple[torch.Tensor, EnsembleState, None]:
        """previous (B,) -> mean log-probabilities (B, V), the members' new states, no attention."""
        steps = [
            member.decode_step(previous, s, e) for member, s, e in zip(self.members, state.members, source.members)
        ]
        log_probs = torch.stack([log_probs for log_probs, _, _ in steps]).mean(dim=0)  # (B, V)
        return log_probs, EnsembleState(tuple(new_state for _, new_state, _ in steps)), None
