"""Marian (OPUS-MT) as token graphs: BART's three graphs with fixed sinusoidal positions.

Notation: P positions, C width, p a position, i < C / 2 a frequency index.

Marian's table is not interleaved: the first half of the columns holds the sines, the second half
the cosines,

    table[p, i] = sin(p / 10000^(2i / C)),   table[p, C/2 + i] = cos(p / 10000^(2i / C))

computed in float64 and rounded to float32 (as ``transformers`` builds it), with no position offset
and no embedding norm; token embeddings are scaled by sqrt(C) (``scale_embedding``) and the
activation is swish. Everything else (graphs, post-norm layers, cache) is :mod:`.bart`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gnn_attention.pretrained.bart import BartConfig, BartGraph, from_hf_bart
from gnn_attention.pretrained.blocks import special_tokens


def sinusoidal_table(P: int, C: int) -> Tensor:
    """Marian's position table. **Shapes:** -> ``[P, C]`` float32."""
    half = C // 2 + C % 2                                  # sines take the extra column if C is odd
    p = torch.arange(P, dtype=torch.float64)[:, None]
    i = torch.arange(0, C, 2, dtype=torch.float64)         # 2i for the sine columns
    angle = p / torch.pow(10000.0, i / C)
    out = torch.empty(P, C, dtype=torch.float64)
    out[:, :half] = torch.sin(angle)
    out[:, half:] = torch.cos(angle[:, :C - half])
    return out.to(torch.float32)


def marian_config(cfg, tokens: dict) -> BartConfig:
    """A :class:`BartConfig` for a ``transformers.MarianConfig`` and its special ``tokens``."""
    if not getattr(cfg, "share_encoder_decoder_embeddings", True):
        raise ValueError("Marian with separate decoder embeddings / vocabulary is not supported")
    return BartConfig.from_hf(cfg, positions="sinusoidal", position_offset=0,
                              layernorm_embedding=False, **tokens)


def from_hf_marian(hf_model) -> BartGraph:
    """A :class:`BartGraph` with a ``MarianMTModel``'s weights and Marian's fixed positions.

    Raises:
        ValueError: the checkpoint's own position table differs from :func:`sinusoidal_table`
            (another position scheme: computing with ours would be silently wrong).
    """
    config = marian_config(hf_model.config, special_tokens(hf_model))
    table = sinusoidal_table(config.max_positions, config.d_model)
    theirs = hf_model.state_dict()["model.encoder.embed_positions.weight"]
    if theirs.shape != table.shape or (theirs.float().cpu() - table).abs().max() > 1e-6:
        raise ValueError("the checkpoint's position table is not Marian's sinusoidal table")
    return from_hf_bart(hf_model, config, table)
