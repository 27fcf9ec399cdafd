"""The lecture's cells compute what torch's fused kernels compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mt.cells import ReferenceRNN, Trace, run_fused_held
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


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_layers_over_held_padding_give_what_packing_gives(cell, bidirectional):
    torch.manual_seed(0)
    rnn = FUSED[cell](6, 7, num_layers=2, batch_first=True, bidirectional=bidirectional)  # even, then odd input widths
    lengths = torch.tensor([6, 3, 1, 5, 6])
    inputs = torch.randn(5, 6, 6)
    inputs_packed, inputs_held = inputs.clone().requires_grad_(), inputs.clone().requires_grad_()
    onednn, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, True  # training's kernels
    try:
        packed = pack_padded_sequence(inputs_packed, lengths, batch_first=True, enforce_sorted=False)
        out_packed, state_packed = rnn(packed)
        out_packed, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=6)
        out_held, state_held = run_fused_held(rnn, Cell(cell), inputs_held, lengths)
        states = lambda state: state if cell == "lstm" else (state,)  # noqa: E731
        torch.testing.assert_close(out_held, out_packed, atol=1e-5, rtol=1e-5)
        for held, packed_state in zip(states(state_held), states(state_packed), strict=True):
            torch.testing.assert_close(held, packed_state, atol=1e-5, rtol=1e-5)

        grads = {}
        for name, out, state in (("packed", out_packed, state_packed), ("held", out_held, state_held)):
            torch.manual_seed(1)  # the same arbitrary loss of outputs and every final state
            loss = (out * torch.randn_like(out)).sum() + sum((s * torch.randn_like(s)).sum() for s in states(state))
            rnn.zero_grad()
            loss.backward()
            grads[name] = {n: p.grad.clone() for n, p in rnn.named_parameters()}
    finally:
        torch.backends.mkldnn.enabled = onednn
    torch.testing.assert_close(inputs_held.grad, inputs_packed.grad, atol=1e-5, rtol=1e-5)
    for name, grad in grads["packed"].items():
        torch.testing.assert_close(grads["held"][name], grad, atol=1e-5, rtol=1e-5, msg=name)
