"""int8 inference on the CPU: int8 weights, and activations quantised with
scales that do not depend on the batch.

torch's dynamic quantisation picks one activation scale per batch, so a
sentence's translation would depend (slightly) on the sentences it is batched
with. Here every layer quantises its input with a fixed scale: most of those
inputs are bounded by construction (an LSTM's h_t = o_t * tanh(C_t),
GRU and RNN states, the attentional vector and the encoder outputs lie in
[-1, 1]; the embeddings within their largest weight). The unbounded inputs,
an LSTM's final cell state and the projected features of a tied output layer,
are scaled row by row.
An int8 product accumulates exactly in int32, so every row's products are the
same alone or in any batch. The fp32 parts (the attention's scores, softmax
and weighted sums, the gates' nonlinearities) work row by row too, and a
sentence's logits come out bit-identical alone and in any batch
(`tests/test_quantize.py`): a server that batches the sentences of many
requests gives each what `mt translate` gives for it alone. (A matrix-vector
kernel would not do: it sums in an order that depends on the batch, and int8's
rounding downstream turns a last-bit difference into another translation.)

int8 is the default of `mt translate`, `mt evaluate` and `mt serve` on x86
CPUs (`int8_by_default`).

The recurrent layers run step by step in Python (`mt.cells.UnrolledRNN`), the
attention's softmax and weighted sums stay fp32.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mt.cells import UnrolledRNN
from mt.config import Cell, MTError
from mt.model import BahdanauAttention, Seq2Seq

# Activations take 7 bits (0..127, zero at 64): with 8, the 16-bit pairwise sums of
# the AVX2 int8 kernels can saturate (fbgemm's "reduce_range").
ZERO_POINT, LEVELS = 64, 63


def _int8_kernel():
    try:
        return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    except (AttributeError, RuntimeError):
        raise MTError(
            f"this torch ({torch.__version__}) has no int8 linear kernel for the CPU; translate in fp32 with --no-quantize"
        ) from None


class Int8Linear(nn.Module):
    """y = x W^T + b with W in int8 (one scale per output row) and x quantised
    with the fixed scale bound / 63 (values beyond ±bound are clipped), or with
    `bound=None` each row of x scaled by its own largest |x|. x (..., D) -> y (..., O)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bound: float | None):
        super().__init__()
        self.kernel = _int8_kernel()
        weight = weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127  # (O,)
        zero_points = torch.zeros(weight.size(0), dtype=torch.long)
        with warnings.catch_warnings():  # torch marks its quantised tensors deprecated in favour of torchao
            warnings.simplefilter("ignore")
            quantized = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        bias = None if bias is None else bias.detach().float()
        self.bound = bound
        self.row_bias = bias if bound is None else None  # added after the rows are scaled back
        self.packed = torch.ops.quantized.linear_prepack(quantized, bias if bound is not None else None)

    @classmethod
    def of(cls, linear: nn.Linear, bound: float | None) -> Int8Linear:
        return cls(linear.weight, linear.bias, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            return self(x.reshape(-1, x.size(-1))).view(*x.shape[:-1], -1)
        if self.bound is not None:
            return self.kernel(x, self.bound / LEVELS, ZERO_POINT, self.packed)
        scale = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)  # (R, 1)
        y = self.kernel(x / scale, 1.0 / LEVELS, ZERO_POINT, self.packed) * scale
        return y if self.row_bias is None else y + self.row_bias


class Int8RNN(UnrolledRNN):
    """An LSTM, GRU or RNN (torch's or the reference layers, one or two
    directions) for inference, its input and recurrent products in int8; called
    like `UnrolledRNN`. Every layer's input lies within `input_bound` (the first)
    or 1 (the states of the layer below)."""

    def __init__(self, rnn: nn.Module, cell: Cell, num_layers: int, bidirectional: bool, input_bound: float):
        super().__init__()
        self.cell, self.num_layers, self.bidirectional = cell, num_layers, bidirectional
        self.hidden_size = rnn.weight_hh_l0.size(1)
        self.projections = nn.ModuleDict()
        for layer in range(num_layers):
            for suffix in ["", "_reverse"][: 2 if bidirectional else 1]:
                key = f"l{layer}{suffix}"
                self.projections[key] = nn.ModuleList(
                    [
                        Int8Linear(
                            getattr(rnn, f"weight_ih_{key}"),
                            getattr(rnn, f"bias_ih_{key}"),
                            input_bound if layer == 0 else 1.0,
                        ),
                        Int8Linear(getattr(rnn, f"weight_hh_{key}"), getattr(rnn, f"bias_hh_{key}"), 1.0),
                    ]
                )

    def _run_direction(self, inputs, lengths, h, C, layer: int, suffix: str):
        input_part, recurrent_part = self.projections[f"l{layer}{suffix}"]
        projected = input_part(inputs)  # (B, S, G*H): the input's part of every step at once
        update, has_cell_state = self.cell_type.update, self.cell_type.has_cell_state
        hidden_states, cell_states = [], []
        # Every sequence runs all S steps; past its length nothing is kept (its outputs are
        # zeroed and its final state is the one at its length), so no step needs a mask.
        for t in range(inputs.size(1)):
            h, C, _ = update(projected[:, t], recurrent_part(h), h, C)  # the cell's equations, in fp32
            hidden_states.append(h)
            if has_cell_state:
                cell_states.append(C)
        outputs = torch.stack(hidden_states, dim=1)  # (B, S, H)
        if lengths is None:
            return outputs, h, C
        last = lengths - 1  # (B,)
        rows = torch.arange(outputs.size(0), device=outputs.device)
        final_C = torch.stack(cell_states, dim=1)[rows, last] if cell_states else None
        alive = torch.arange(outputs.size(1), device=outputs.device) < lengths[:, None]  # (B, S)
        return outputs * alive[:, :, None], outputs[rows, last], final_C


# torch's int8 engines that have the kernel `Int8Linear` needs ("onednn" has not, in torch 2.13).
INT8_ENGINES = ("x86", "fbgemm")


def int8_by_default(device: torch.device) -> bool:
    """Whether translation on `device` runs in int8 unless told otherwise: on x86 CPUs
    (torch's int8 engine "x86" or "fbgemm"), where beam 5 measured 1.3-2.4x faster than
    fp32 with BLEU equal within 0.3 (docs/benchmarks.md); not on GPUs, nor on ARM
    CPUs (engine "qnnpack": not measured)."""
    return device.type == "cpu" and torch.backends.quantized.engine in INT8_ENGINES


def quantize_int8(model: Seq2Seq) -> Seq2Seq:
    """Turn `model`, in place, into a CPU inference model with its recurrent
    layers, bridge, attention projections, combination and output layer in int8
    (see the module docstring); returns it."""
    model.eval()
    config, encoder, decoder = model.config, model.encoder, model.decoder

    def largest(embedding: nn.Embedding) -> float:
        return float(embedding.weight.detach().abs().max())

    encoder.rnn = Int8RNN(encoder.rnn, config.cell, config.num_layers, config.bidirectional, largest(encoder.embedding))
    if encoder.bridge is not None:  # h_t in [-1, 1]; an LSTM's cell state C_t is unbounded
        encoder.bridge = nn.ModuleList(
            Int8Linear.of(linear, 1.0 if index == 0 else None) for index, linear in enumerate(encoder.bridge)
        )
    # The decoder's first layer reads [embedding; attentional vector] with attention, the embedding alone without.
    first_input = max(largest(decoder.embedding), 1.0) if decoder.attention is not None else largest(decoder.embedding)
    decoder.rnn = Int8RNN(decoder.rnn, config.cell, config.num_layers, False, first_input)
    if decoder.attention is not None:
        decoder.attention.key = Int8Linear.of(decoder.attention.key, 1.0)  # encoder outputs
        if isinstance(decoder.attention, BahdanauAttention):
            decoder.attention.query = Int8Linear.of(decoder.attention.query, 1.0)  # the decoder's hidden state
        decoder.combine = Int8Linear.of(decoder.combine, 1.0)  # [context; hidden]: mixes of states in [-1, 1]
    if decoder.tie_embeddings:  # features -> E (bounded input), then the embedding matrix (unbounded input)
        decoder.readout = Int8Linear.of(decoder.readout, 1.0)
        decoder.quantized_output = Int8Linear(decoder.embedding.weight, decoder.output_bias, None)
    else:
        decoder.quantized_output = Int8Linear.of(decoder.readout, 1.0)
    return model
