"""The padded reference for graph-transformer layers: ``nn.MultiheadAttention`` on
``to_dense_batch`` tensors with a float ``attn_mask [G*H, M, M]`` (the bias where attention is
allowed, -inf elsewhere), the way graph transformers are usually implemented."""
import torch
from torch_geometric.utils import to_dense_batch


def dense_bias(batch, edge_index, edge_bias, heads):
    """``[G, H, M, M]``: entry (g, h, i, j) = bias of edge j -> i (query i, key j), -inf off the
    edges; padded query rows may attend to themselves (their outputs are dropped), so no row is
    fully masked and no NaN reaches the gradients."""
    G = int(batch.max()) + 1
    sizes = torch.bincount(batch)
    M = int(sizes.max())
    ptr = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    out = torch.full((G, heads, M, M), float("-inf"), dtype=edge_bias.dtype)
    j, i = edge_index
    g = batch[i]
    out[g, :, i - ptr[g], j - ptr[g]] = edge_bias
    pad = torch.arange(M).view(1, M) >= sizes.view(G, 1)
    gi, ti = pad.nonzero(as_tuple=True)
    out[gi, :, ti, ti] = 0.0
    return out


def padded_attention(mha, x, batch, bias):
    """``nn.MultiheadAttention`` (batch_first) over padded graphs with a float mask; real rows."""
    xd, mask = to_dense_batch(x, batch)
    G, H, M, _ = bias.shape
    out, _ = mha(xd, xd, xd, attn_mask=bias.reshape(G * H, M, M), need_weights=False)
    return out[mask]
