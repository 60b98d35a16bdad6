"""Bad input at every library entry point gets a specific, readable error (asserted verbatim).

Notation: N nodes, E edges, H heads, D/Dv widths, C = embed_dim, B/T/S batch/queries/keys.
Entry points: graph builders and conversions (lengths, masks, edge_index), ``graph_attention``,
``MultiheadAttentionConv`` (construction and forward, every edge-index path) and
``MultiheadAttention`` (nn.MultiheadAttention's contract). Function-level shape errors of
``graph_attention`` itself are also covered in tests/attention/test_functional.py.
"""
from __future__ import annotations

import re

import pytest
import torch

from gnn_attention import MultiheadAttention, MultiheadAttentionConv, graphs
from gnn_attention.attention.functional import graph_attention

H, D, DV, C = 2, 4, 5, 24
EI = torch.tensor([[0, 1, 3], [0, 1, 2]])  # 4 sources, 3 targets


def qkv(n_dst=3, n_src=4, dtype=torch.float32):
    return (torch.randn(n_dst, H, D).to(dtype), torch.randn(n_src, H, D).to(dtype),
            torch.randn(n_src, H, DV).to(dtype))


def expect(error, message, fn):
    """``fn()`` raises ``error`` whose text starts with ``message`` (matched literally)."""
    with pytest.raises(error, match="^" + re.escape(message)):
        fn()


# ---------------------------------------------------------------------------------------------
# edge_index: dtype, shape, range, duplicates, sequences


EDGE_INDEX_CASES = {
    "float dtype": (EI.float(), TypeError,
                    "edge_index must have an integer dtype (int64), got torch.float32"),
    "bool dtype": (EI.bool(), TypeError,
                   "edge_index must have an integer dtype (int64), got torch.bool"),
    "three rows": (torch.zeros(3, 2, dtype=torch.long), ValueError,
                   "edge_index must have shape [2, E], got (3, 2)"),
    "one-dimensional": (torch.tensor([0, 1]), ValueError,
                        "edge_index must have shape [2, E], got (2,)"),
    "not a tensor": ([[0, 1], [0, 1]], TypeError,
                     "edge_index must be a Tensor or TokenGraph, got list"),
    "negative index": (torch.tensor([[0, -1], [0, 1]]), IndexError,
                       ("edge_index out of range: sources must lie in [0, 4) and targets in "
                        "[0, 3), got sources in [-1, 0] and targets in [0, 1]")),
    "source past the end": (torch.tensor([[0, 4], [0, 1]]), IndexError,
                            ("edge_index out of range: sources must lie in [0, 4) and targets "
                             "in [0, 3), got sources in [0, 4] and targets in [0, 1]")),
    "target past the end": (torch.tensor([[0, 1], [0, 3]]), IndexError,
                            ("edge_index out of range: sources must lie in [0, 4) and targets "
                             "in [0, 3), got sources in [0, 1] and targets in [0, 3]")),
    "duplicate edge": (torch.tensor([[3, 0, 1, 3], [2, 0, 1, 2]]), ValueError,
                       ("edge_index has 1 duplicate edge(s), first j=3 -> i=2; attention edges "
                        "form a set (a repeated edge would count its key twice in the softmax): "
                        "remove them, e.g. torch.unique(edge_index, dim=1)")),
}


@pytest.mark.parametrize("path", ["graph_attention", "conv", "conv_message_passing",
                                  "from_edge_index"])
@pytest.mark.parametrize("case", sorted(EDGE_INDEX_CASES))
def test_bad_edge_index_is_rejected_on_every_path(case, path):
    ei, error, message = EDGE_INDEX_CASES[case]
    if path == "graph_attention":
        fn = lambda: graph_attention(*qkv(), ei)
    elif path == "from_edge_index":
        fn = lambda: graphs.from_edge_index(ei, [4], [3])
    else:
        backend = "message_passing" if path == "conv_message_passing" else "auto"
        layer = MultiheadAttentionConv(C, H, backend=backend)
        fn = lambda: layer((torch.randn(4, C), torch.randn(3, C)), ei)
    expect(error, message, fn)


def test_edges_between_sequences_are_rejected():
    expect(ValueError, "edge_index has edges between two different sequences; a batch of token "
           "graphs is a disjoint union",
           lambda: graphs.from_edge_index(torch.tensor([[0], [3]]), [2, 2], [2, 2]))


# ---------------------------------------------------------------------------------------------
# lengths: negative, non-integer, wrong rank, more tokens than the tensors hold


BUILDERS = {"full": graphs.full, "causal": graphs.causal,
            "window": lambda n: graphs.window(n, 2), "cross": lambda n: graphs.cross(n, n),
            "predicate": lambda n: graphs.from_predicate(n, lambda t, s, T, S: s <= t)}


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_negative_lengths_are_rejected_by_every_builder(builder):
    with pytest.raises(ValueError, match=r"^(src_|dst_)?lengths must be non-negative, got \[3, -1\]$"):
        BUILDERS[builder]([3, -1])


def test_lengths_must_be_a_list_of_integers():
    expect(ValueError, "lengths must be non-negative, got [3, -1]", lambda: graphs.full([3, -1]))
    expect(TypeError, "lengths must hold integers, got dtype torch.float32",
           lambda: graphs.full([2.5]))
    expect(ValueError, "lengths must be 1-D (one length per sequence), got shape (1, 1)",
           lambda: graphs.full([[3]]))
    expect(ValueError, "src_lengths has 2 sequences, lengths has 1",
           lambda: graphs.causal([3], src_lengths=[3, 4]))
    expect(ValueError, "src_lengths has 2 sequences, dst_lengths has 1",
           lambda: graphs.cross([3, 4], [3]))


def test_lengths_that_exceed_the_tensors_are_rejected():
    g = graphs.causal([3, 4])  # 7 tokens
    expect(ValueError, "graph has 7 source and 7 target nodes, but k has 6 rows and q has 6",
           lambda: graph_attention(*qkv(6, 6), g))
    expect(ValueError, "graph has 7 source and 7 target nodes, but k has 6 rows and q has 6",
           lambda: MultiheadAttentionConv(C, H)(torch.randn(6, C), g))
    # edges that point past the declared lengths
    expect(IndexError, "edge_index out of range: sources must lie in [0, 2) and targets in [0, 2)",
           lambda: graphs.from_edge_index(EI, [2], [2]))


# ---------------------------------------------------------------------------------------------
# graph_attention: tensor types, heads, bias, dropout


def test_graph_attention_rejects_bad_tensors():
    q, k, v = qkv()
    expect(TypeError, "q, k, v must be floating point, got torch.int64",
           lambda: graph_attention(*qkv(dtype=torch.int64), EI))
    expect(ValueError, "q, k, v need at least one head",
           lambda: graph_attention(q[:, :0], k[:, :0], v[:, :0], EI))
    expect(TypeError, "edge_bias must be a Tensor [E, H] or None, got list",
           lambda: graph_attention(q, k, v, EI, edge_bias=[0.0, 0.0, 0.0]))
    expect(ValueError, "edge_bias must have shape [E, H] or [E, 1] with E=3, H=2, got [3]",
           lambda: graph_attention(q, k, v, EI, edge_bias=torch.zeros(3)))
    expect(ValueError, "dropout_p must be in [0, 1], got -0.1",
           lambda: graph_attention(q, k, v, EI, dropout_p=-0.1))
    expect(ValueError, "strict=True: 1 target node(s) have no incoming edge (first: 2)",
           lambda: graph_attention(q, k, v, EI[:, :2], strict=True))


# ---------------------------------------------------------------------------------------------
# MultiheadAttentionConv: construction and feature widths


@pytest.mark.parametrize("kwargs, message", [
    (dict(embed_dim=10, num_heads=3), "embed_dim (10) must be a positive multiple of num_heads (3)"),
    (dict(embed_dim=12, num_heads=0), "embed_dim (12) must be a positive multiple of num_heads (0)"),
    (dict(embed_dim=0, num_heads=1), "embed_dim (0) must be a positive multiple of num_heads (1)"),
    (dict(embed_dim=12, num_heads=3, dropout=1.0), "dropout must be in [0, 1), got 1.0"),
    (dict(embed_dim=12, num_heads=3, score="cosine"),
     "score must be one of ('scaled_dot', 'dot', 'general', 'additive'), got 'cosine'"),
])
def test_conv_construction_errors(kwargs, message):
    expect(ValueError, message, lambda: MultiheadAttentionConv(**kwargs))


def test_conv_feature_width_must_match_embed_dim():
    layer = MultiheadAttentionConv(C, H, kdim=7, vdim=9)
    g = graphs.cross([4], [3])
    x_k, x_v, x_q = torch.randn(4, 7), torch.randn(4, 9), torch.randn(3, C)
    expect(ValueError, "query/target features must have shape [N, 24], got [3, 23]",
           lambda: layer(((x_k, x_v), torch.randn(3, 23)), g))
    expect(ValueError, "key/source features must have shape [N, 7], got [4, 8]",
           lambda: layer(((torch.randn(4, 8), x_v), x_q), g))
    expect(ValueError, "value/source features must have shape [N, 9], got [4, 7]",
           lambda: layer(((x_k, x_k), x_q), g))
    expect(ValueError, "query/target features must have shape [N, 24], got [1, 3, 24]",
           lambda: MultiheadAttentionConv(C, H)(x_q[None], graphs.full([3])))
    expect(TypeError, "x must be a tensor [N, C] or a pair (x_src, x_dst)",
           lambda: layer((x_k, x_v, x_q), g))
    expect(ValueError, "keys and values need one row per source node, got 4 and 5",
           lambda: layer(((x_k, torch.randn(5, 9)), x_q), g))


# ---------------------------------------------------------------------------------------------
# MultiheadAttention (nn.MultiheadAttention's contract) and dense masks


def test_mha_mask_and_shape_errors():
    m = MultiheadAttention(C, H, batch_first=True)
    x = torch.randn(2, 5, C)
    expect(ValueError, "key_padding_mask must have shape [B, S] = [2, 5], got [2, 4]",
           lambda: m(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)))
    expect(ValueError, "attn_mask must have shape [T, S] = [5, 5] or [B * H, T, S] = [4, 5, 5], "
           "got [4, 5]", lambda: m(x, x, x, attn_mask=torch.zeros(4, 5, dtype=torch.bool)))
    expect(TypeError, "only bool and floating types of key_padding_mask are supported, got torch.int64",
           lambda: m(x, x, x, key_padding_mask=torch.zeros(2, 5, dtype=torch.long)))
    expect(ValueError, "expected feature widths (query, key, value) = (24, 24, 24), got (23, 23, 23)",
           lambda: m(*[torch.randn(2, 5, 23)] * 3))
    expect(ValueError, "query, key, value must be 3-D (batched) or 2-D (unbatched), got "
           "[1, 2, 5, 24], [1, 2, 5, 24], [1, 2, 5, 24]", lambda: m(x[None], x[None], x[None]))
    expect(ValueError, "key and value must have shape [B, S, *] with B=2, got [2, 5, 24] and "
           "[2, 3, 24]", lambda: m(x, x, x[:, :3]))
    expect(ValueError, "embed_dim (24) must be a positive multiple of num_heads (5)",
           lambda: MultiheadAttention(C, 5))


def test_dense_mask_errors():
    expect(ValueError, "convention must be 'sdpa' (True = allowed) or 'mha' (True = blocked), got "
           "'torch'", lambda: graphs.from_dense_mask(torch.ones(2, 2, dtype=torch.bool), "torch"))
    expect(TypeError, "mask must be a bool tensor, got torch.float32",
           lambda: graphs.from_dense_mask(torch.ones(2, 2), "sdpa"))
    expect(ValueError, "mask must have shape [T, S] or [B, T, S], got (1, 1, 2, 2)",
           lambda: graphs.from_dense_mask(torch.ones(1, 1, 2, 2, dtype=torch.bool), "sdpa"))


def test_builder_option_errors():
    expect(ValueError, "window needs w >= 0 and dilation >= 1, got w=-1, dilation=1",
           lambda: graphs.window([3], -1))
    expect(ValueError, "window needs w >= 0 and dilation >= 1, got w=2, dilation=0",
           lambda: graphs.window([3], 2, dilation=0))
    expect(ValueError, "align must be one of ('top_left', 'bottom_right'), got 'middle'",
           lambda: graphs.causal([3], align="middle"))
    expect(ValueError, "cannot union graphs over different sequences",
           lambda: graphs.union(graphs.full([3]), graphs.full([4])))
