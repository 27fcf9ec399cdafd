"""The lecture's cells compute what torch's fused kernels compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mt.cells import ReferenceRNN, Trace
from mt.config import Cell

FUSED = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", [c.value for c in Cell])
def test_reference_cell_matches_the_fused_kernel_in_outputs_and_gradients(cell, bidirectional):
    torch.manual_seed(0)
    fused = FUSED[cell](5, 7, num_layers=2, batch_first=True, bidirectional=bidirectional).double()
    reference = ReferenceRNN(cell, 5, 7, num_layers=2, bidirectional=bidirectional).double()
    reference.load_state_dict(fused.state_dict())  # the same weights under the same names
    lengths = torch.tensor([6, 3, 1, 5])
    inputs = torch.randn(4, 6, 5, dtype=torch.double)
    inputs_ref = inputs.clone().requires_grad_()
    inputs_fused = inputs.clone().requires_grad_()

    packed = pack_padded_sequence(inputs_fused, lengths, batch_first=True, enforce_sorted=False)
    out_fused, state_fused = fused(packed)
    out_fused, _ = pad_packed_sequence(out_fused, batch_first=True, total_length=6)
    out_ref, state_ref = reference(inputs_ref, None, lengths)

    torch.testing.assert_close(out_ref, out_fused, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(
        state_ref if cell == "lstm" else (state_ref,), state_fused if cell == "lstm" else (state_fused,)
    ):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

    weights = torch.randn_like(out_fused)  # an arbitrary loss of outputs and final state
    final = lambda state: state[0] if cell == "lstm" else state  # noqa: E731
    ((out_fused * weights).sum() + final(state_fused).sum()).backward()
    ((out_ref * weights).sum() + final(state_ref).sum()).backward()
    torch.testing.assert_close(inputs_ref.grad, inputs_fused.grad, atol=1e-5, rtol=1e-5)
    fused_grads = dict(fused.named_parameters())
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(parameter.grad, fused_grads[name].grad, atol=1e-5, rtol=1e-5, msg=name)


def test_trace_records_every_state_and_gate_in_time_order():
    reference = ReferenceRNN("lstm", 3, 4, num_layers=2)
    reference.trace = Trace()
    outputs, (h, _) = reference(torch.randn(2, 5, 3))
    assert set(reference.trace.hidden) == {"l0", "l1"}
    assert len(reference.trace.cell["l1"]) == 5
    assert set(reference.trace.gates["l0"]) == {"forget", "input", "output"}
    torch.testing.assert_close(reference.trace.hidden["l1"][-1], h[1])
    for gate in reference.trace.gates["l1"].values():
        assert all(((g > 0) & (g < 1)).all() for g in gate)
