"""The encoder-decoder Transformer as a graph network, and a drop-in for ``nn.Transformer``.

Notation: B batch, S source length, T target length, C = d_model, H heads; N_src = B * S and
N_dst = B * T nodes (the drop-in keeps padded positions as nodes: a padded *key* simply has no
outgoing edge, a padded *query* still computes, exactly as in torch).

    memory = Encoder(src; G_src)                 G_src  = src_mask & src_key_padding_mask
    out    = Decoder(tgt, memory; G_tgt, G_x)    G_tgt  = tgt_mask & tgt_key_padding_mask
                                                 G_x    = memory_mask & memory_key_padding_mask

``encoder`` and ``decoder`` are the drop-ins of :mod:`gnn_attention.models.torch_layers`, callable
exactly as torch's (``model.encoder(src, mask=..., src_key_padding_mask=...)``); each builds its
graphs once per call from the dense masks (bool masks: True = blocked, the ``nn.MultiheadAttention``
convention; float masks add to the scores, -inf = no edge) and shares them with every layer. The
library's own models call ``encoder.graph_forward`` / ``decoder.graph_forward`` with graphs.
Parameter names equal ``nn.Transformer``'s, so ``load_state_dict`` works both ways.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict
from typing import Optional

from torch import Tensor, nn

from gnn_attention.models.config import TransformerConfig, activation_name
from gnn_attention.models.mha import InputShapeError
from gnn_attention.models.torch_layers import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)


class Transformer(nn.Module):
    """Drop-in for ``torch.nn.Transformer``; attention runs as message passing on token graphs.

    Same constructor and forward contract:
    ``forward(src, tgt, src_mask, tgt_mask, memory_mask, src_key_padding_mask,
    tgt_key_padding_mask, memory_key_padding_mask, src_is_causal, tgt_is_causal,
    memory_is_causal)``. ``custom_encoder``/``custom_decoder`` are used as given (any module with
    torch's encoder/decoder call signature); ``to_torch`` then needs the built-in stacks.
    ``*_is_causal=True`` builds the causal graph (top-left aligned) even without a mask. One
    difference, on purpose: a query with no allowed key outputs zero attention instead of NaN.

    **Shapes:** ``src [B, S, C]``, ``tgt [B, T, C]`` (``[S, B, C]``/``[T, B, C]`` unless
    ``batch_first``; 2-D unbatched), masks ``[T, S]`` or ``[B * H, T, S]``, key padding masks
    ``[B, S]``/``[B, T]`` -> ``[B, T, C]``.
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", custom_encoder=None, custom_decoder=None,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.config = TransformerConfig(
            d_model=d_model, nhead=nhead, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
            dropout=dropout, activation=activation_name(activation) or activation,
            layer_norm_eps=layer_norm_eps, norm_first=norm_first, bias=bias)
        kw = dict(self.config.layer_kwargs(), batch_first=batch_first, device=device, dtype=dtype)
        norm = lambda: nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, device=device,  # noqa
                                    dtype=dtype)
        self.encoder = custom_encoder if custom_encoder is not None else TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, **kw), num_encoder_layers, norm())
        self.decoder = custom_decoder if custom_decoder is not None else TransformerDecoder(
            TransformerDecoderLayer(d_model, nhead, **kw), num_decoder_layers, norm())
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        self._reset_parameters()

    @classmethod
    def from_config(cls, config: TransformerConfig, batch_first: bool = True,
                    **kw) -> "Transformer":
        return cls(**asdict(config), batch_first=batch_first, **kw)

    def _reset_parameters(self) -> None:
        # As nn.Transformer: Xavier-uniform on every matrix.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device=None, dtype=None) -> Tensor:
        """The float causal mask ``[sz, sz]`` (-inf above the diagonal), as torch's."""
        return nn.Transformer.generate_square_subsequent_mask(sz, device=device, dtype=dtype)

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Optional[Tensor] = None,
                tgt_mask: Optional[Tensor] = None, memory_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None,
                tgt_key_padding_mask: Optional[Tensor] = None,
                memory_key_padding_mask: Optional[Tensor] = None,
                src_is_causal: Optional[bool] = None, tgt_is_causal: Optional[bool] = None,
                memory_is_causal: bool = False) -> Tensor:
        b_dim = 0 if self.batch_first else 1
        if src.dim() != tgt.dim() or src.dim() not in (2, 3) or (
                src.dim() == 3 and src.size(b_dim) != tgt.size(b_dim)):
            raise InputShapeError(f"src and tgt must be [B, S, C] and [B, T, C] with the same batch "
                                  f"size, got {list(src.shape)} and {list(tgt.shape)}")
        if src.size(-1) != self.d_model or tgt.size(-1) != self.d_model:
            raise InputShapeError(f"the feature number of src and tgt must be equal to d_model "
                                  f"({self.d_model}), got {src.size(-1)} and {tgt.size(-1)}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    # -- torch interop -------------------------------------------------------------------------

    @classmethod
    def from_torch(cls, t: nn.Transformer, **kwargs) -> "Transformer":
        """A graph Transformer with ``t``'s configuration, a copy of its weights and its
        train/eval mode."""
        enc, dec = t.encoder, t.decoder
        if not (hasattr(enc, "layers") and hasattr(dec, "layers") and len(enc.layers)
                and len(dec.layers)):
            raise ValueError("from_torch needs an nn.Transformer built from standard "
                             "TransformerEncoderLayer/TransformerDecoderLayer stacks")
        layer = enc.layers[0]
        p = next(t.parameters())
        out = cls(d_model=layer.self_attn.embed_dim, nhead=layer.self_attn.num_heads,
                  num_encoder_layers=len(enc.layers), num_decoder_layers=len(dec.layers),
                  dim_feedforward=layer.linear1.out_features, dropout=layer.dropout.p,
                  activation=layer.activation, layer_norm_eps=layer.norm1.eps,
                  batch_first=t.batch_first, norm_first=layer.norm_first, bias=layer.linear1.bias is not None,
                  device=p.device, dtype=p.dtype, **kwargs)
        out.load_state_dict(t.state_dict())
        return out.train(t.training)

    def to_torch(self) -> nn.Transformer:
        """An ``nn.Transformer`` with this model's configuration, a copy of its weights and its
        train/eval mode."""
        if not (isinstance(self.encoder, TransformerEncoder)
                and isinstance(self.decoder, TransformerDecoder)):
            raise ValueError("to_torch needs the built-in encoder and decoder, this model has a "
                             "custom one")
        c, p = self.config, next(self.parameters())
        with warnings.catch_warnings():  # torch's note that its nested-tensor fast path is off
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            t = nn.Transformer(**asdict(c), batch_first=self.batch_first, device=p.device,
                               dtype=p.dtype)
        t.load_state_dict(self.state_dict())
        return t.train(self.training)
