"""The training loss: the chunked output layer + label-smoothed cross-entropy of
`mt.loss.output_loss` is the textbook loss (full logits, F.cross_entropy), in
value and in every parameter's gradient."""

from __future__ import annotations

import pytest
import torch

import mt.loss
from mt.loss import label_smoothed_loss, output_loss


def _loss_and_gradients(model, batch, loss_of):
    model.zero_grad()
    loss = loss_of(model, *batch)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("options", [{}, {"tie_embeddings": True}, {"attention": "bahdanau"}])
def test_chunked_output_loss_equals_the_textbook_loss_and_gradients(
    make_model, make_sources, monkeypatch, smoothing, options
):
    monkeypatch.setattr(mt.loss, "LOSS_CHUNK_ROWS", 4)  # many chunks, the last one partial
    model = make_model(**options).train()
    torch.manual_seed(1)
    source, lengths = make_sources([6, 4, 5], 17)
    target_in = torch.randint(4, 23, (3, 5))
    target_out = torch.randint(4, 23, (3, 5))
    target_out[1, 3:] = 0  # padding is not counted
    target_out[2, 4:] = 0
    pad = model.config.pad_id

    def textbook(model, source, lengths, target_in, target_out):
        torch.manual_seed(2)  # the same dropout masks on both sides
        logits, _ = model(source, lengths, target_in)
        return label_smoothed_loss(logits, target_out, smoothing, pad)

    def chunked(model, source, lengths, target_in, target_out):
        torch.manual_seed(2)
        features, _ = model(source, lengths, target_in, features=True)
        return output_loss(model.decoder, features, target_out, smoothing, pad)

    batch = (source, lengths, target_in, target_out)
    expected_loss, expected = _loss_and_gradients(model, batch, textbook)
    loss, gradients = _loss_and_gradients(model, batch, chunked)
    torch.testing.assert_close(loss, expected_loss)
    assert gradients.keys() == expected.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("options", [{}, {"tie_embeddings": True}])
def test_under_bf16_autocast_the_chunked_loss_stays_within_bf16_precision_of_the_textbook_loss(
    make_model, make_sources, monkeypatch, options
):
    """Only the output layer and the loss run under autocast here (the recurrent
    layers would need bf16 LSTM kernels): the chunked loss rounds the softmax to
    bf16 for its products, the textbook one rounds the logits' gradient."""
    monkeypatch.setattr(mt.loss, "LOSS_CHUNK_ROWS", 4)
    model = make_model(**options).train()
    torch.manual_seed(1)
    source, lengths = make_sources([6, 4, 5], 17)
    target_in = torch.randint(4, 23, (3, 5))
    target_out = torch.randint(4, 23, (3, 5))
    target_out[1, 3:] = 0
    pad = model.config.pad_id

    def loss_of(apply_output_layer):
        def loss(model, source, lengths, target_in, target_out):
            torch.manual_seed(2)
            features, _ = model(source, lengths, target_in, features=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return apply_output_layer(model, features, target_out)

        return loss

    batch = (source, lengths, target_in, target_out)
    expected_loss, expected = _loss_and_gradients(
        model, batch, loss_of(lambda m, f, t: label_smoothed_loss(m.decoder.logits(f), t, 0.1, pad))
    )
    loss, gradients = _loss_and_gradients(model, batch, loss_of(lambda m, f, t: output_loss(m.decoder, f, t, 0.1, pad)))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected_loss, rtol=1e-2, atol=0.0)
    for name, gradient in gradients.items():
        error = (gradient - expected[name]).norm() / expected[name].norm()
        assert error < 2e-2, (name, error.item())
