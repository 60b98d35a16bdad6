"""Pattern: a frozen label whose equality is its name and parameters (the predicate is not
compared), and the predicate a structured builder fills in."""
import dataclasses

import pytest
import torch

from gnn_attention import graphs
from gnn_attention.graphs.pattern import Pattern


def test_equality_ignores_the_predicate_and_the_label_is_frozen():
    a = Pattern("band", (2,), lambda t, s, T, S: (t - s).abs() <= 2)
    assert a == Pattern("band", (2,)) and a != Pattern("band", (3,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "other"


def test_a_builder_fills_in_its_predicate():
    p = graphs.causal([4]).pattern
    t, s = torch.arange(4).view(-1, 1), torch.arange(4).view(1, -1)
    assert p == Pattern("causal", ("top_left",))
    assert torch.equal(p.allows(t, s, torch.tensor(4), torch.tensor(4)), s <= t)
