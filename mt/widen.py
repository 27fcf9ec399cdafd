"""Widening a trained model: more hidden units that compute the same function
(function-preserving growth, as Net2Net's: Chen, Goodfellow & Shlens 2016).

`mt train --init-from small --hidden-size N` (N at least the small model's) starts
from the small model's weights. Each hidden unit the larger model adds keeps its
random incoming weights, but its weights *out* to the units the small model had
start at zero: the old units compute exactly what they computed before, so the
larger model starts by translating as the small one does, and training puts the
new units to use (their outgoing weights get gradients from the first update on).

Weights are laid out in blocks along each dimension: an RNN's weight matrices stack
one block of rows per gate, a bidirectional encoder's outputs hold the forward
then the backward units, and the attentional layer reads [context; hidden]. Each
block grows at its end; `layouts` names the blocks of every weight.
"""

from __future__ import annotations

import torch

from mt.cells import CELL_TYPES
from mt.config import AttentionKind, ModelConfig
from mt.model import Seq2Seq

# The (old size, new size) of the consecutive blocks along one dimension of a weight.
Blocks = tuple[tuple[int, int], ...]

# Luong's score sums keys x query over H: a new key row would add a product of new
# units to every old score, so the key's new rows start at zero as well (Bahdanau's
# new key rows would be cancelled by the zero energy weights; zero does no harm there).
ZERO_NEW_ROWS = frozenset({"decoder.attention.key.weight"})


def layouts(small: ModelConfig, large: ModelConfig) -> dict[str, tuple[Blocks, ...]]:
    """The blocks of each dimension of every weight that the hidden size shapes;
    the others (embeddings, output bias) are the same in both models."""
    directions = 2 if small.bidirectional else 1
    gates = CELL_TYPES[small.cell].gates
    per_direction: Blocks = ((small.hidden_size // directions, large.hidden_size // directions),)
    hidden: Blocks = ((small.hidden_size, large.hidden_size),)
    memory = per_direction * directions  # encoder outputs: forward units, then backward ones
    embedded: Blocks = ((small.embedding_size, small.embedding_size),)
    attention = small.attention != AttentionKind.none
    layout: dict[str, tuple[Blocks, ...]] = {}
    for layer in range(small.num_layers):
        for suffix in ("", "_reverse")[:directions]:
            inputs = embedded if layer == 0 else memory
            layout |= _rnn_layer("encoder.rnn", f"l{layer}{suffix}", per_direction * gates, inputs, per_direction)
        inputs = (embedded + hidden if attention else embedded) if layer == 0 else hidden  # input feeding
        layout |= _rnn_layer("decoder.rnn", f"l{layer}", hidden * gates, inputs, hidden)
    if small.bidirectional:
        for state in range(CELL_TYPES[small.cell].states):
            layout[f"encoder.bridge.{state}.weight"] = (hidden, memory)
            layout[f"encoder.bridge.{state}.bias"] = (hidden,)
    if attention:
        layout["decoder.attention.key.weight"] = (hidden, memory)
        layout["decoder.attention.query.weight"] = (hidden, hidden)
        layout["decoder.attention.query.bias"] = (hidden,)
        layout["decoder.attention.energy.weight"] = (((1, 1),), hidden)
        layout["decoder.combine.weight"] = (hidden, memory + hidden)
    outputs = small.embedding_size if small.tie_embeddings else small.tgt_vocab_size
    layout["decoder.readout.weight"] = (((outputs, outputs),), hidden)
    layout["decoder.readout.bias"] = (((outputs, outputs),),)
    return layout


def _rnn_layer(prefix: str, layer: str, rows: Blocks, inputs: Blocks, hidden: Blocks) -> dict[str, tuple[Blocks, ...]]:
    """One layer (one direction) of torch's RNN weights: a block of rows per gate."""
    return {
        f"{prefix}.weight_ih_{layer}": (rows, inputs),
        f"{prefix}.weight_hh_{layer}": (rows, hidden),
        f"{prefix}.bias_ih_{layer}": (rows,),
        f"{prefix}.bias_hh_{layer}": (rows,),
    }


def positions(blocks: Blocks) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the old entries go in the new dimension (old size,), and where the new ones are (added,)."""
    kept, added, start = [], [], 0
    for old, new in blocks:
        kept.append(torch.arange(start, start + old))
        added.append(torch.arange(start + old, start + new))
        start += new
    return torch.cat(kept), torch.cat(added)


def inherit_weights(model: Seq2Seq, parent: Seq2Seq) -> None:
    """Load `parent`'s weights into `model`, which has the parent's architecture with
    as many hidden units or more; the added units keep `model`'s initial incoming weights
    and start with zero weights into the parent's units (see the module's docstring)."""
    layout = layouts(parent.config, model.config)
    weights = parent.state_dict()
    with torch.no_grad():
        for name, target in model.state_dict().items():
            source = weights[name].to(target.dtype)
            blocks = layout.get(name, tuple(((size, size),) for size in source.shape))
            kept, added = zip(*map(positions, blocks))
            target[torch.meshgrid(*kept, indexing="ij")] = source
            if target.dim() == 2:  # the old units read nothing from the new ones
                target[torch.meshgrid(kept[0], added[1], indexing="ij")] = 0
            if name in ZERO_NEW_ROWS:
                target[added[0]] = 0
