"""The training loss: label-smoothed cross-entropy over the decoder's V-way output
layer (Szegedy et al. 2016), computed chunk by chunk so that the (B*T, V) logits
are never stored whole."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mt.model import Decoder


def label_smoothed_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float, pad_id: int) -> torch.Tensor:
    """logits (B, T, V), target (B, T) -> mean cross-entropy over real target tokens."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), ignore_index=pad_id, label_smoothing=smoothing
    )


# Rows of the output layer that the training loss computes at a time: a chunk's
# (rows, V) logits stay small instead of the batch's (B*T, V).
LOSS_CHUNK_ROWS = 512


class _ChunkedOutputLoss(torch.autograd.Function):
    """The V-way output layer and the label-smoothed cross-entropy as one
    operation, LOSS_CHUNK_ROWS rows at a time, so that the (N, V) logits, their
    softmax and their gradient, the largest tensors of a training step (130 MB
    each for 4,000 target tokens and 8,000 pieces), are never stored whole. The
    loss is a scalar: the gradients are computed in the forward pass while each
    chunk's probabilities are at hand, and the backward pass only scales them.
    Under autocast the products run in its dtype, the softmax in fp32."""

    @staticmethod
    def forward(ctx, inputs, weight, bias, target, smoothing: float, pad_id: int):
        # inputs (N, D), weight (V, D), bias (V,) or None, target (N,)
        device = inputs.device.type
        compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
        vocab, width = weight.shape
        real = (target != pad_id).nonzero().squeeze(1)  # (n,) the rows of real target tokens
        count = max(real.numel(), 1)
        total = torch.zeros((), dtype=torch.float32, device=inputs.device)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None else None
        with torch.autocast(device, enabled=False):
            x_all, y_all = inputs.index_select(0, real).to(compute), target.index_select(0, real)
            w = weight.to(compute)
            b = bias.to(compute) if bias is not None else None
            grad_real = torch.empty(real.numel(), width, dtype=torch.float32, device=inputs.device)
            # One set of (rows, V) buffers for every chunk: fresh ones would be paged in again each time.
            rows = min(LOSS_CHUNK_ROWS, real.numel())
            logits_buffer = torch.empty(rows, vocab, dtype=compute, device=inputs.device)
            log_probs_buffer = torch.empty(rows, vocab, dtype=torch.float32, device=inputs.device)
            probs_buffer = (
                torch.empty(rows, vocab, dtype=compute, device=inputs.device) if compute != torch.float32 else None
            )
            for start in range(0, real.numel(), LOSS_CHUNK_ROWS):
                x, y = x_all[start : start + LOSS_CHUNK_ROWS], y_all[start : start + LOSS_CHUNK_ROWS]
                n = x.size(0)
                logits = (
                    torch.addmm(b, x, w.t(), out=logits_buffer[:n])
                    if b is not None
                    else torch.mm(x, w.t(), out=logits_buffer[:n])
                )
                log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32, out=log_probs_buffer[:n])
                # torch's label smoothing: (1 - eps) * NLL + eps * the mean of -log p over the vocabulary
                total -= (1 - smoothing) * log_probs.gather(1, y[:, None]).sum() + smoothing / vocab * log_probs.sum()
                probs = log_probs.exp_()
                if grad_bias is not None:
                    grad_bias += probs.sum(dim=0)
                if compute != torch.float32:
                    probs = probs_buffer[:n].copy_(probs)
                grad_real[start : start + n] = probs @ w
                grad_weight += (probs.t() @ x).float()
            # d loss / d logits = softmax - eps / V - (1 - eps) * onehot(target): the loop applied the
            # softmax; the two other terms, the same for every chunk, are applied once here.
            uniform, onehot = smoothing / vocab, 1 - smoothing
            x_all, w = x_all.float(), weight.float()  # the fp32 weight itself, not its bf16 copy converted back
            grad_real -= uniform * w.sum(dim=0)
            grad_real.sub_(w.index_select(0, y_all), alpha=onehot)
            grad_weight -= uniform * x_all.sum(dim=0)
            grad_weight.index_add_(0, y_all, x_all, alpha=-onehot)
            if grad_bias is not None:
                grad_bias -= uniform * real.numel()
                grad_bias.index_add_(0, y_all, torch.ones_like(y_all, dtype=torch.float32), alpha=-onehot)
        grad_inputs = torch.zeros_like(inputs).index_copy_(0, real, grad_real.to(inputs.dtype))
        ctx.save_for_backward(grad_inputs / count, grad_weight / count, None if bias is None else grad_bias / count)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_inputs, grad_weight, grad_bias = ctx.saved_tensors
        scaled_bias = None if grad_bias is None else grad_bias * grad_loss
        return grad_inputs * grad_loss, grad_weight * grad_loss, scaled_bias, None, None, None


def output_loss(decoder: Decoder, features: torch.Tensor, target: torch.Tensor, smoothing: float, pad_id: int):
    """features (B, T, H), target (B, T) -> the mean label-smoothed cross-entropy over
    real target tokens of the decoder's output layer: `label_smoothed_loss` of
    `decoder.logits(features)`, computed chunk by chunk (for training)."""
    inputs, weight, bias = decoder.output_layer(features)
    flat = inputs.reshape(-1, inputs.size(-1))
    return _ChunkedOutputLoss.apply(flat, weight, bias, target.reshape(-1), smoothing, pad_id)
