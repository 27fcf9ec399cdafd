"""int8 inference on the CPU: the decoder's weights as 8-bit integers.

Beam search reads every weight of the decoder at every step, and for the
batches a server or a person sends, those reads (not the arithmetic) are what
a step costs: the shipped de-en model's decoder holds about 26 MB of fp32
weights. In int8 they take a quarter of that.

Each weight row (output channel) has its own scale, max |w| / 127. Each row of
the input (one sentence's beam) is quantised on its own too, scaled by its own
largest value, so a sentence's translation does not depend on the sentences
batched with it. (torch's dynamic quantisation takes one scale from the whole
batch, so it does.) The encoder runs once per sentence, not once per step,
and stays fp32.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mt.config import MTError
from mt.model import Seq2Seq

# An input row scaled into [-1, 1] is stored as uint8 around zero point 64 with steps of
# 2/127: at most 128, so that fbgemm's u8 x s8 pair sums cannot saturate 16 bits.
INPUT_SCALE, INPUT_ZERO_POINT = 2 / 127, 64


def _int8_linear_op():
    try:
        return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    except (AttributeError, RuntimeError):
        message = f"this torch ({torch.__version__}) has no int8 matrix product; translate without --quantize"
        raise MTError(message) from None


class Int8Linear(nn.Module):
    """y = x W^T + b with W in int8 (per output row) and x quantised row by row."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.op = _int8_linear_op()
        weight = weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp_min(1e-8) / 127  # (out,)
        with warnings.catch_warnings():  # torch marks quantised tensors deprecated (in favour of torchao)
            warnings.simplefilter("ignore")
            zero_points = torch.zeros(weight.size(0), dtype=torch.long)
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.out_features = weight.size(0)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def of(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        rows = x.reshape(-1, x.size(-1))  # (R, in)
        row_max = torch.linalg.vector_norm(rows, float("inf"), dim=1, keepdim=True).clamp_min(1e-8)  # (R, 1)
        y = self.op(rows / row_max, INPUT_SCALE, INPUT_ZERO_POINT, self.packed)  # (R, out), for rows in [-1, 1]
        y = y * row_max if self.bias is None else torch.addcmul(self.bias, y, row_max)
        return y.view(*x.shape[:-1], self.out_features)


class Int8RNN(nn.Module):
    """A unidirectional, batch-first LSTM, GRU or plain RNN stack with int8 weights;
    the same equations as torch's `nn.LSTM`, `nn.GRU`, `nn.RNN` (and `cells.py`).
    An LSTM or RNN layer takes [x_t, h_{t-1}] through one product, [W_i | W_h];
    a GRU's reset gate scales the recurrent part alone, so it keeps two."""

    def __init__(self, rnn: nn.Module, cell: str):
        super().__init__()
        self.cell, self.num_layers = cell, rnn.num_layers
        params = dict(rnn.named_parameters())
        weights = [
            [params[f"{kind}_l{k}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            for k in range(self.num_layers)
        ]
        if cell == "gru":
            self.layers = nn.ModuleList(
                nn.ModuleList([Int8Linear(w_ih, b_ih), Int8Linear(w_hh, b_hh)]) for w_ih, w_hh, b_ih, b_hh in weights
            )
        else:
            self.layers = nn.ModuleList(
                Int8Linear(torch.cat([w_ih, w_hh], dim=1), b_ih + b_hh) for w_ih, w_hh, b_ih, b_hh in weights
            )

    def _step(self, layer: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None):
        """x_t (B, I), h_{t-1} and C_{t-1} (B, H) -> h_t, C_t."""
        if self.cell == "gru":
            x_r, x_z, x_n = layer[0](x).chunk(3, dim=-1)
            h_r, h_z, h_n = layer[1](h).chunk(3, dim=-1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            return (1 - z) * torch.tanh(x_n + r * h_n) + z * h, None
        gates = layer(torch.cat([x, h], dim=-1))  # (B, G*H)
        if self.cell == "rnn":
            return torch.tanh(gates), None
        i, f, g, o = gates.chunk(4, dim=-1)  # torch's gate order: input, forget, cell, output
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, inputs: torch.Tensor, state):
        """inputs (B, T, I), state like torch's ((L, B, H) each) -> outputs (B, T, H), final state."""
        h0, c0 = state if self.cell == "lstm" else (state, None)
        final_h, final_c, layer_input = [], [], inputs
        for k, layer in enumerate(self.layers):
            h, c, outputs = h0[k], None if c0 is None else c0[k], []
            for t in range(inputs.size(1)):
                h, c = self._step(layer, layer_input[:, t], h, c)
                outputs.append(h)
            layer_input = torch.stack(outputs, dim=1)  # (B, T, H)
            final_h.append(h)
            final_c.append(c)
        hidden = torch.stack(final_h)
        return layer_input, ((hidden, torch.stack(final_c)) if self.cell == "lstm" else hidden)


def quantize_int8(model: Seq2Seq) -> Seq2Seq:
    """Turn `model`, in place, into a CPU inference model whose decoder (recurrent
    layers, attention, output layer) computes with int8 weights; returns it.
    The embeddings, the encoder and Bahdanau's energy vector stay fp32."""
    model.eval()
    decoder = model.decoder
    # The V-way output layer: the embedding matrix when tied (an int8 copy of it), else the readout.
    weight, bias = decoder.output_layer(torch.zeros(1, model.config.hidden_size))[1:]
    decoder.quantized_output = Int8Linear(weight, bias)
    linears = [
        (parent, name, child)
        for parent in decoder.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
        and child.out_features > 1  # a dot product (Bahdanau's energy): no weights worth shrinking
        and not (child is decoder.readout and not decoder.tie_embeddings)
    ]
    for parent, name, child in linears:
        setattr(parent, name, Int8Linear.of(child))
    decoder.rnn = Int8RNN(decoder.rnn, model.config.cell)
    return model
