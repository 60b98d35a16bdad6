"""The encoder-decoder Transformer as a graph network, and a drop-in for ``nn.Transformer``.

Notation: B batch, S source length, T target length, C = d_model, H heads; N_src = B * S and
N_dst = B * T nodes (the drop-in keeps padded positions as nodes: a padded *key* simply has no
outgoing edge, a padded *query* still computes, exactly as in torch).

    memory = Encoder(src; G_src)                 G_src  = src_mask & src_key_padding_mask
    out    = Decoder(tgt, memory; G_tgt, G_x)    G_tgt  = tgt_mask & tgt_key_padding_mask
                                                 G_x    = memory_mask & memory_key_padding_mask

The three graphs are built once per forward from the dense masks (bool masks: True = blocked, the
``nn.MultiheadAttention`` convention; float masks add to the scores, -inf = no edge) and shared by
every layer. Parameter names equal ``nn.Transformer``'s, so ``load_state_dict`` works both ways.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict
from typing import Optional

from torch import Tensor, nn

from gnn_attention.graphs import masks_to_graph
from gnn_attention.models.config import ACTIVATIONS, TransformerConfig
from gnn_attention.models.layers import Decoder, DecoderLayer, Encoder, EncoderLayer


def _activation_name(activation) -> str:
    """Accept torch's forms: "relu"/"gelu" or the functions ``F.relu``/``F.gelu``."""
    if isinstance(activation, str):
        return activation
    for name, fn in ACTIVATIONS.items():
        if activation is fn:
            return name
    raise ValueError(f"activation must be 'relu', 'gelu', F.relu or F.gelu, got {activation!r}")


class Transformer(nn.Module):
    """Drop-in for ``torch.nn.Transformer``; attention runs as message passing on token graphs.

    Same constructor (``custom_encoder``/``custom_decoder`` excepted) and forward contract:
    ``forward(src, tgt, src_mask, tgt_mask, memory_mask, src_key_padding_mask,
    tgt_key_padding_mask, memory_key_padding_mask, src_is_causal, tgt_is_causal,
    memory_is_causal)``.
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
        if custom_encoder is not None or custom_decoder is not None:
            raise ValueError("custom_encoder/custom_decoder are not supported: the stacks here run "
                             "on token graphs")
        self.config = TransformerConfig(
            d_model=d_model, nhead=nhead, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
            dropout=dropout, activation=_activation_name(activation),
            layer_norm_eps=layer_norm_eps, norm_first=norm_first, bias=bias)
        kw = dict(self.config.layer_kwargs(), device=device, dtype=dtype)
        norm = lambda: nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, device=device,  # noqa
                                    dtype=dtype)
        self.encoder = Encoder(EncoderLayer(d_model, nhead, **kw), num_encoder_layers, norm())
        self.decoder = Decoder(DecoderLayer(d_model, nhead, **kw), num_decoder_layers, norm())
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
        unbatched = src.dim() == 2
        if unbatched:
            src, tgt = src.unsqueeze(0), tgt.unsqueeze(0)
            pads = [None if m is None else m.unsqueeze(0) for m in
                    (src_key_padding_mask, tgt_key_padding_mask, memory_key_padding_mask)]
            src_key_padding_mask, tgt_key_padding_mask, memory_key_padding_mask = pads
        elif not self.batch_first:
            src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)
        if src.dim() != 3 or tgt.dim() != 3 or src.size(0) != tgt.size(0):
            raise ValueError(f"src and tgt must be [B, S, C] and [B, T, C] with the same batch "
                             f"size, got {list(src.shape)} and {list(tgt.shape)}")
        if src.size(-1) != self.d_model or tgt.size(-1) != self.d_model:
            raise ValueError(f"the feature number of src and tgt must be equal to d_model "
                             f"({self.d_model}), got {src.size(-1)} and {tgt.size(-1)}")
        (B, S, C), T, H = src.shape, tgt.size(1), self.nhead
        g_src, b_src = masks_to_graph(B, S, S, H, src_key_padding_mask, src_mask,
                                      bool(src_is_causal), src.dtype, src.device)
        g_tgt, b_tgt = masks_to_graph(B, T, T, H, tgt_key_padding_mask, tgt_mask,
                                      bool(tgt_is_causal), tgt.dtype, tgt.device)
        g_x, b_x = masks_to_graph(B, T, S, H, memory_key_padding_mask, memory_mask,
                                  bool(memory_is_causal), tgt.dtype, tgt.device)
        memory = self.encoder(src.reshape(B * S, C), g_src, b_src)
        out = self.decoder(tgt.reshape(B * T, C), memory, g_tgt, g_x, b_tgt, b_x).view(B, T, C)
        if unbatched:
            return out.squeeze(0)
        return out if self.batch_first else out.transpose(0, 1)

    # -- torch interop -------------------------------------------------------------------------

    @classmethod
    def from_torch(cls, t: nn.Transformer, **kwargs) -> "Transformer":
        """A graph Transformer with ``t``'s configuration and a copy of its weights."""
        enc, dec = t.encoder, t.decoder
        if not (hasattr(enc, "layers") and hasattr(dec, "layers") and len(enc.layers)
                and len(dec.layers)):
            raise ValueError("from_torch needs an nn.Transformer built from standard "
                             "TransformerEncoderLayer/TransformerDecoderLayer stacks")
        layer = enc.layers[0]
        act = {1: "relu", 2: "gelu"}.get(getattr(layer, "activation_relu_or_gelu", 0))
        if act is None:
            raise ValueError(f"only relu and gelu activations are supported, got "
                             f"{layer.activation!r}")
        p = next(t.parameters())
        out = cls(d_model=layer.self_attn.embed_dim, nhead=layer.self_attn.num_heads,
                  num_encoder_layers=len(enc.layers), num_decoder_layers=len(dec.layers),
                  dim_feedforward=layer.linear1.out_features, dropout=layer.dropout.p,
                  activation=act, layer_norm_eps=layer.norm1.eps, batch_first=t.batch_first,
                  norm_first=layer.norm_first, bias=layer.linear1.bias is not None,
                  device=p.device, dtype=p.dtype, **kwargs)
        out.load_state_dict(t.state_dict())
        return out

    def to_torch(self) -> nn.Transformer:
        """An ``nn.Transformer`` with this model's configuration and a copy of its weights."""
        c, p = self.config, next(self.parameters())
        with warnings.catch_warnings():  # torch's note that its nested-tensor fast path is off
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            t = nn.Transformer(**asdict(c), batch_first=self.batch_first, device=p.device,
                               dtype=p.dtype)
        t.load_state_dict(self.state_dict())
        return t
