"""Widening a model (`mt.widen`): the wider model computes what the narrow one did,
its new units are live, and training reaches the weights that start at zero."""

from __future__ import annotations

import pytest
import torch
from helpers import random_targets

from mt.widen import inherit_weights, layouts, positions

SRC_V, TGT_V = 17, 23


@pytest.fixture(params=[True, False], ids=["tied", "untied"])
def widened(request, architecture, make_model):
    """(narrow parent, its widening from hidden 12 to 20) of one architecture."""
    options = {**architecture, "tie_embeddings": request.param}
    parent = make_model(seed=0, **options)
    child = make_model(seed=1, **options, hidden_size=20)
    inherit_weights(child, parent)
    return parent, child


def test_a_widened_model_computes_what_its_parent_did(widened, make_sources):
    parent, child = widened
    source, lengths = make_sources([5, 3, 7], SRC_V)
    target_in = random_targets([4, 6, 2], TGT_V)
    expected, expected_attention = parent(source, lengths, target_in)
    logits, attention = child(source, lengths, target_in)
    assert torch.allclose(logits, expected, atol=1e-5)
    if expected_attention is not None:
        assert torch.allclose(attention, expected_attention, atol=1e-6)


def test_a_widened_models_new_units_are_live(widened, make_sources):
    parent, child = widened
    source, lengths = make_sources([5, 3, 7], SRC_V)
    memory = child.encode(source, lengths)[0].memory  # (B, S, 20)
    # The encoder's outputs are the second layer's input: its columns name the new units.
    _, added = positions(layouts(parent.config, child.config)["encoder.rnn.weight_ih_l1"][1])
    assert memory.shape[-1] == 20 and len(added) == 8
    assert memory[..., added].abs().sum() > 0


def test_training_reaches_the_weights_that_start_at_zero(widened, make_sources):
    """Every weight that starts at zero (an old unit reading a new one) gets a gradient."""
    parent, child = widened
    child.train()
    source, lengths = make_sources([5, 3, 7], SRC_V)
    logits, _ = child(source, lengths, random_targets([4, 6, 2], TGT_V))
    logits.sum().backward()
    parameters = dict(child.named_parameters())
    checked = 0
    for name, blocks in layouts(parent.config, child.config).items():
        if len(blocks) == 2 and name in parameters:
            kept_rows, _ = positions(blocks[0])
            _, added_columns = positions(blocks[1])
            if len(added_columns):
                assert parameters[name].grad[kept_rows][:, added_columns].abs().sum() > 0, name
                checked += 1
    assert checked > 0


def test_widening_to_the_same_size_copies_the_weights(architecture, make_model):
    parent, child = make_model(seed=0, **architecture), make_model(seed=1, **architecture)
    inherit_weights(child, parent)
    for name, tensor in parent.state_dict().items():
        assert torch.equal(child.state_dict()[name], tensor), name
