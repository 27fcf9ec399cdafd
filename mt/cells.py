"""Recurrent cells written out as the lecture's equations, one line each.

These reference layers compute exactly what torch's fused `nn.LSTM`, `nn.GRU`
and `nn.RNN` compute, and keep their parameters under the same names
(`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, ..., `_reverse`
for the backward direction), so a checkpoint loads into either. They are
slower; they exist to be read, and to expose what the fused kernels hide:
every hidden state h_t, cell state C_t and gate activation, which the
diagnostics (`mt inspect`) differentiate and measure.

torch stores each gate's weights split into an input part W_i* (applied to
x_t) and a recurrent part W_h* (applied to h_{t-1}), with two biases. The
lecture's W_f [h_{t-1}, x_t] + b_f is the same thing with the two parts side
by side: W_f = [W_hf | W_if], b_f = b_hf + b_if.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from mt.config import Cell


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first `lengths[b]` positions of each row of a (B, S, ...)
    tensor and leave the padding where it is. Applying it twice is identity."""
    batch, width = x.shape[:2]
    positions = torch.arange(width, device=x.device).expand(batch, width)  # (B, S)
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, S)
    if x.dim() == 3:
        index = index[:, :, None].expand(-1, -1, x.size(2))
    return x.gather(1, index)


def _lecture_weights(
    weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor, gate: int
):
    """W (H, H + E) and b (H,) of gate number `gate` in torch's layout, for [h_{t-1}, x_t]."""
    rows = slice(gate * weight_hh.size(1), (gate + 1) * weight_hh.size(1))
    return torch.cat([weight_hh[rows], weight_ih[rows]], dim=1), bias_ih[rows] + bias_hh[rows]


def lstm_step(x_t, h_prev, C_prev, weights):
    """One LSTM step. x_t (B, E), h_prev and C_prev (B, H), the gates' (W, b) ->
    h_t, C_t and the gates (B, H)."""
    (W_i, b_i), (W_f, b_f), (W_C, b_C), (W_o, b_o) = weights  # torch's gate order: input, forget, cell, output
    hx = torch.cat([h_prev, x_t], dim=-1)  # [h_{t-1}, x_t]
    f_t = torch.sigmoid(hx @ W_f.T + b_f)  # forget gate: how much of C_{t-1} to keep
    i_t = torch.sigmoid(hx @ W_i.T + b_i)  # input gate: how much of the candidate to write
    C_tilde = torch.tanh(hx @ W_C.T + b_C)  # candidate cell state
    C_t = f_t * C_prev + i_t * C_tilde  # new cell state: the gradient's highway
    o_t = torch.sigmoid(hx @ W_o.T + b_o)  # output gate: how much of the cell to show
    h_t = o_t * torch.tanh(C_t)  # new hidden state
    return h_t, C_t, {"forget": f_t, "input": i_t, "output": o_t}


def rnn_step(x_t, h_prev, C_prev, weights):
    """One plain (Elman) RNN step: h_t = tanh(W [h_{t-1}, x_t] + b); no cell state, no gates."""
    ((W, b),) = weights
    h_t = torch.tanh(torch.cat([h_prev, x_t], dim=-1) @ W.T + b)
    return h_t, None, {}


def gru_step(x_t, h_prev, C_prev, params):
    """One GRU step (Cho et al. 2014) in torch's formulation, where the reset
    gate scales the recurrent part of the candidate after its bias; `params` are
    torch's (weight_ih, weight_hh, bias_ih, bias_hh). No cell state."""
    weight_ih, weight_hh, bias_ih, bias_hh = params
    gi = x_t @ weight_ih.T + bias_ih  # (B, 3H): reset, update, candidate parts from x_t
    gh = h_prev @ weight_hh.T + bias_hh  # (B, 3H): the same from h_{t-1}
    return gru_update(gi, gh, h_prev, C_prev)


# The updates below take a step's pre-activations already split into the input's
# part gi = W_i x_t + b_i and the previous state's part gh = W_h h_{t-1} + b_h
# (B, G*H), for layers that compute those products themselves (the int8 layers of
# `mt.quantize`), and return h_t, C_t (None without a cell state) and the gates.


def lstm_update(gi, gh, h_prev, C_prev):
    """The LSTM's equations (`lstm_step`) on pre-activations (B, 4H) in torch's gate
    order: input, forget, cell, output."""
    gates = gi + gh
    hidden = C_prev.size(1)
    input_gate, forget_gate, _, output_gate = torch.sigmoid(gates).chunk(4, dim=1)
    candidate = torch.tanh(gates[:, 2 * hidden : 3 * hidden])
    cell_state = torch.addcmul(forget_gate * C_prev, input_gate, candidate)
    return (
        output_gate * torch.tanh(cell_state),
        cell_state,
        {"forget": forget_gate, "input": input_gate, "output": output_gate},
    )


def gru_update(gi, gh, h_prev, C_prev):
    """The GRU's gates and h_t (B, H) from pre-activations (B, 3H): reset, update, candidate."""
    hidden = h_prev.size(-1)
    r_t = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])  # reset gate
    z_t = torch.sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])  # update gate
    n_t = torch.tanh(gi[:, 2 * hidden :] + r_t * gh[:, 2 * hidden :])  # candidate state
    h_t = (1 - z_t) * n_t + z_t * h_prev
    return h_t, None, {"reset": r_t, "update": z_t}


def rnn_update(gi, gh, h_prev, C_prev):
    """The plain RNN's h_t = tanh(gi + gh) (B, H)."""
    return torch.tanh(gi + gh), None, {}


@dataclass(frozen=True)
class CellType:
    """All that differs between the recurrent cells, in one place (`CELL_TYPES`).

    A step is `step(x_t, h_prev, C_prev, weights) -> (h_t, C_t, gates)` and an
    update `update(gi, gh, h_prev, C_prev) -> (h_t, C_t, gates)`: x_t (B, I),
    states (B, H), C None without a cell state, gates a dict of (B, H)."""

    gates: int  # blocks of H rows in torch's weight matrices
    has_cell_state: bool  # an LSTM carries C_t beside h_t
    fused: type[nn.RNNBase]  # torch's kernel, with the parameters the reference layers copy
    step: Callable  # the lecture's equations for one time step
    update: Callable  # the same from pre-activations computed elsewhere (int8)
    # The GRU's step reads torch's split weights: its reset gate scales the recurrent
    # part alone, so W [h_{t-1}, x_t] cannot be formed for its candidate.
    joined_weights: bool = True
    # Per gate, the sign of a saturating pre-activation that carries the state over a step
    # unchanged (`run_fused_held`); None where no gate can (the plain RNN).
    hold: tuple[int, ...] | None = None

    @property
    def states(self) -> int:
        """State tensors per layer: h_t, and C_t for an LSTM (each bridged apart)."""
        return 2 if self.has_cell_state else 1

    def step_weights(self, params: list[torch.Tensor]):
        """What `step` reads, from torch's (weight_ih, weight_hh, bias_ih, bias_hh) of one
        layer and direction: each gate's lecture (W, b), or (GRU) those four as they are."""
        if not self.joined_weights:
            return params
        return [_lecture_weights(*params, gate) for gate in range(self.gates)]


CELL_TYPES: dict[Cell, CellType] = {
    # LSTM: input gate 0 and forget gate 1 keep C_t; GRU: update gate 1 keeps h_t.
    Cell.lstm: CellType(
        gates=4, has_cell_state=True, fused=nn.LSTM, step=lstm_step, update=lstm_update, hold=(-1, 1, 0, 0)
    ),
    Cell.gru: CellType(
        gates=3,
        has_cell_state=False,
        fused=nn.GRU,
        step=gru_step,
        update=gru_update,
        joined_weights=False,
        hold=(0, 1, 0),
    ),
    Cell.rnn: CellType(gates=1, has_cell_state=False, fused=nn.RNN, step=rnn_step, update=rnn_update),
}


# A pre-activation this large puts a gate's sigmoid at exactly 0 or 1, in fp32 and in bf16.
SATURATED = 1e4


def run_fused_held(rnn: nn.RNNBase, cell: Cell, inputs: torch.Tensor, lengths: torch.Tensor):
    """torch's fused LSTM or GRU `rnn` (batch_first, zero initial state) over padded inputs
    (B, S, I) with lengths (B,) -> outputs (B, S, H * directions), zero at padding, and the
    final state like torch's: what `rnn` gives the same sequences packed.

    On the CPU a packed sequence runs torch's own loop of small products, step by step;
    a padded one runs oneDNN's fused kernel, which under bf16 autocast on a CPU with AMX is
    about 1.5x faster (`docs/benchmarks.md`; `Encoder` decides where). Padding must then
    leave the state alone: every layer reads an extra input, 1 at padding, whose weights
    saturate the gates that keep the state (`CellType.hold`), so that the state crosses the
    padding unchanged, and the gradient is zero there. Each sequence's final state is thus
    the one at its length (the LSTM's h_t aside, which its output gate still changes: it is
    read from the outputs); the backward direction starts from the zero state, held
    through the padding it reads first."""
    cell_type = CELL_TYPES[cell]
    batch, steps = inputs.shape[:2]
    directions = 2 if rnn.bidirectional else 1
    hidden = rnn.hidden_size
    padding = torch.arange(steps, device=inputs.device)[None, :] >= lengths.to(inputs.device)[:, None]  # (B, S)
    rows, last = torch.arange(batch, device=inputs.device), lengths.to(inputs.device) - 1
    hold = torch.tensor(cell_type.hold, dtype=torch.float32, device=inputs.device).repeat_interleave(hidden)
    final_h, final_c, layer_input = [], [], inputs
    for layer in range(rnn.num_layers):
        # Two flag columns where the input width is even: an odd width halves the speed of oneDNN's bf16 kernel.
        width = 2 - layer_input.size(-1) % 2
        flagged = torch.cat([layer_input, padding[:, :, None].expand(-1, -1, width).to(layer_input.dtype)], dim=-1)
        params = []
        for suffix in ["", "_reverse"][:directions]:
            weight_ih = getattr(rnn, f"weight_ih_l{layer}{suffix}")
            column = (SATURATED / width * hold).to(weight_ih.dtype)[:, None].expand(-1, width)
            params.append(torch.cat([weight_ih, column], dim=1))
            params.append(getattr(rnn, f"weight_hh_l{layer}{suffix}"))
            if rnn.bias:
                params += [getattr(rnn, f"bias_ih_l{layer}{suffix}"), getattr(rnn, f"bias_hh_l{layer}{suffix}")]
        zeros = inputs.new_zeros(directions, batch, hidden)
        options = (params, rnn.bias, 1, 0.0, rnn.training, rnn.bidirectional, True)  # one layer, batch first
        if cell_type.has_cell_state:
            outputs, h, c = torch.lstm(flagged, (zeros, zeros), *options)
            final_c += list(c)
        else:
            outputs, h = torch.gru(flagged, zeros, *options)
        outputs = outputs.masked_fill(padding[:, :, None], 0)
        final_h += [outputs[rows, last, :hidden], *h[1:]]  # forward: at the length; backward: after position 0
        layer_input = outputs
        if rnn.dropout and rnn.training and layer < rnn.num_layers - 1:
            layer_input = nn.functional.dropout(layer_input, rnn.dropout, training=True)
    hidden_state = torch.stack(final_h)
    return layer_input, ((hidden_state, torch.stack(final_c)) if cell_type.has_cell_state else hidden_state)


@dataclass
class Trace:
    """What a reference layer saw, per layer and direction, in time order:
    hidden states h_t, cell states C_t (LSTM) and gate activations, each (B, H)."""

    hidden: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    cell: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    gates: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=dict)


class UnrolledRNN(nn.Module):
    """Recurrent layers unrolled in Python, one time step at a time, called like
    `nn.LSTM` / `nn.GRU` / `nn.RNN` (batch_first) but with padded input and
    `lengths` instead of a packed sequence: past its length a sequence's state
    stops changing, which is what packing does. Subclasses say how one layer
    runs in one direction (`_run_direction`)."""

    cell: Cell
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float = 0.0

    @property
    def cell_type(self) -> CellType:
        """The description of this layer's cell (`CELL_TYPES`)."""
        return CELL_TYPES[self.cell]

    def _run_direction(self, inputs, lengths, h, C, layer: int, suffix: str):
        """inputs (B, S, I) in processing order, lengths (B,) or None (no padding),
        initial h and C (B, H) -> outputs (B, S, H), final h and C (B, H)."""
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        """inputs (B, S, I), initial state like torch's or None, lengths (B,) or None
        (no padding) -> outputs (B, S, H * directions), final state like torch's."""
        batch, steps = inputs.shape[:2]
        directions = 2 if self.bidirectional else 1
        if lengths is not None:
            lengths = lengths.to(inputs.device)
        elif self.bidirectional:  # the backward direction reverses each sequence within its length
            lengths = torch.full((batch,), steps, device=inputs.device)
        has_cell_state = self.cell_type.has_cell_state
        if state is None:
            zeros = inputs.new_zeros(self.num_layers * directions, batch, self.hidden_size)
            state = (zeros, zeros) if has_cell_state else zeros
        h0, c0 = state if has_cell_state else (state, [None] * len(state))
        final_h, final_c = [], []
        layer_input = inputs
        for layer in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(["", "_reverse"][:directions]):
                index = layer * directions + d
                sequence = layer_input if d == 0 else reverse_padded(layer_input, lengths)
                out, h, C = self._run_direction(sequence, lengths, h0[index], c0[index], layer, suffix)
                outputs.append(out if d == 0 else reverse_padded(out, lengths))
                final_h.append(h)
                final_c.append(C)
            layer_input = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        hidden = torch.stack(final_h)
        return layer_input, ((hidden, torch.stack(final_c)) if has_cell_state else hidden)


class ReferenceRNN(UnrolledRNN):
    """A drop-in for `nn.LSTM` / `nn.GRU` / `nn.RNN` computing the lecture's
    equations (above), with torch's parameter names."""

    def __init__(
        self,
        cell: Cell | str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.cell, self.hidden_size, self.num_layers = Cell(cell), hidden_size, num_layers
        self.dropout, self.bidirectional = dropout, bidirectional
        self.trace: Trace | None = None  # set to Trace() to record the next forward pass
        gates = self.cell_type.gates
        directions = 2 if bidirectional else 1
        bound = 1 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for suffix in ["", "_reverse"][:directions]:
                shapes = {
                    f"weight_ih_l{layer}{suffix}": (gates * hidden_size, layer_input),
                    f"weight_hh_l{layer}{suffix}": (gates * hidden_size, hidden_size),
                    f"bias_ih_l{layer}{suffix}": (gates * hidden_size,),
                    f"bias_hh_l{layer}{suffix}": (gates * hidden_size,),
                }
                for name, shape in shapes.items():
                    self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def _params(self, layer: int, suffix: str):
        return [getattr(self, f"{kind}_l{layer}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def _run_direction(self, inputs, lengths, h, C, layer: int, suffix: str):
        step = self.cell_type.step
        weights = self.cell_type.step_weights(self._params(layer, suffix))
        key = f"l{layer}{suffix}"
        if lengths is None:
            lengths = torch.full((inputs.size(0),), inputs.size(1), device=inputs.device)
        outputs = []
        for t in range(inputs.size(1)):  # unrolled in time
            h_new, C_new, gates = step(inputs[:, t], h, C, weights)
            alive = (t < lengths)[:, None]  # (B, 1): past its end a sequence keeps its state
            h = torch.where(alive, h_new, h)
            if C_new is not None:
                C = torch.where(alive, C_new, C)
            outputs.append(h_new * alive)
            if self.trace is not None:
                self.trace.hidden.setdefault(key, []).append(h_new)
                if C_new is not None:
                    self.trace.cell.setdefault(key, []).append(C_new)
                for name, value in gates.items():
                    self.trace.gates.setdefault(key, {}).setdefault(name, []).append(value)
        return torch.stack(outputs, dim=1), h, C
