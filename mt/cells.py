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
from dataclasses import dataclass, field

import torch
from torch import nn

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


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
    """One LSTM step. x_t (B, E), h_prev and C_prev (B, H) -> h_t, C_t and the gates (B, H)."""
    (W_i, b_i), (W_f, b_f), (W_C, b_C), (W_o, b_o) = weights  # torch's gate order: input, forget, cell, output
    hx = torch.cat([h_prev, x_t], dim=-1)  # [h_{t-1}, x_t]
    f_t = torch.sigmoid(hx @ W_f.T + b_f)  # forget gate: how much of C_{t-1} to keep
    i_t = torch.sigmoid(hx @ W_i.T + b_i)  # input gate: how much of the candidate to write
    C_tilde = torch.tanh(hx @ W_C.T + b_C)  # candidate cell state
    C_t = f_t * C_prev + i_t * C_tilde  # new cell state: the gradient's highway
    o_t = torch.sigmoid(hx @ W_o.T + b_o)  # output gate: how much of the cell to show
    h_t = o_t * torch.tanh(C_t)  # new hidden state
    return h_t, C_t, {"forget": f_t, "input": i_t, "output": o_t}


def rnn_step(x_t, h_prev, weights):
    """One plain (Elman) RNN step: h_t = tanh(W [h_{t-1}, x_t] + b)."""
    ((W, b),) = weights
    h_t = torch.tanh(torch.cat([h_prev, x_t], dim=-1) @ W.T + b)
    return h_t


def gru_step(x_t, h_prev, weight_ih, weight_hh, bias_ih, bias_hh):
    """One GRU step (Cho et al. 2014) in torch's formulation, where the reset
    gate scales the recurrent part of the candidate after its bias."""
    gi = x_t @ weight_ih.T + bias_ih  # (B, 3H): reset, update, candidate parts from x_t
    gh = h_prev @ weight_hh.T + bias_hh  # (B, 3H): the same from h_{t-1}
    return gru_update(gi, gh, h_prev)


def gru_update(gi, gh, h_prev):
    """The GRU's gates and h_t (B, H) from the input's part gi and the previous
    state's part gh (B, 3H) of the reset, update and candidate pre-activations."""
    hidden = h_prev.size(-1)
    r_t = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])  # reset gate
    z_t = torch.sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])  # update gate
    n_t = torch.tanh(gi[:, 2 * hidden :] + r_t * gh[:, 2 * hidden :])  # candidate state
    h_t = (1 - z_t) * n_t + z_t * h_prev
    return h_t, {"reset": r_t, "update": z_t}


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

    cell: str
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float = 0.0

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
        if state is None:
            zeros = inputs.new_zeros(self.num_layers * directions, batch, self.hidden_size)
            state = (zeros, zeros) if self.cell == "lstm" else zeros
        h0, c0 = state if self.cell == "lstm" else (state, [None] * len(state))  # GRU and RNN: no cell state
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
        return layer_input, ((hidden, torch.stack(final_c)) if self.cell == "lstm" else hidden)


class ReferenceRNN(UnrolledRNN):
    """A drop-in for `nn.LSTM` / `nn.GRU` / `nn.RNN` computing the lecture's
    equations (above), with torch's parameter names."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.dropout, self.bidirectional = dropout, bidirectional
        self.trace: Trace | None = None  # set to Trace() to record the next forward pass
        gates = GATES[cell]
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
        params = self._params(layer, suffix)
        weights = [_lecture_weights(*params, gate) for gate in range(GATES[self.cell])]
        key = f"l{layer}{suffix}"
        if lengths is None:
            lengths = torch.full((inputs.size(0),), inputs.size(1), device=inputs.device)
        outputs = []
        for t in range(inputs.size(1)):  # unrolled in time
            x_t = inputs[:, t]
            if self.cell == "lstm":
                h_new, C_new, gates = lstm_step(x_t, h, C, weights)
            elif self.cell == "gru":
                h_new, gates = gru_step(x_t, h, *params)
                C_new = None
            else:
                h_new, gates, C_new = rnn_step(x_t, h, weights), {}, None
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
