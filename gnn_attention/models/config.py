"""One configuration of a Transformer layer stack, embedded by every model config.

Notation: C = d_model, H = nhead heads of width C / H, F = dim_feedforward.

``LayerConfig`` holds what shapes an encoder/decoder layer (the arguments ``nn.TransformerEncoderLayer``
takes) and validates it once. The model configs (``TransformerConfig``, ``Seq2SeqConfig``,
``EncoderOnlyConfig``, ``DecoderOnlyConfig``) are LayerConfigs plus their own fields; the layer
fields are keyword-only, so ``Seq2SeqConfig(src_vocab, tgt_vocab, d_model=...)`` reads as before,
and each model changes only the defaults it needs (:func:`default`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Optional, Union, get_args

import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["relu", "gelu"]
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}
assert tuple(ACTIVATIONS) == get_args(Activation)
# What torch's layers accept: a name, or any callable Tensor -> Tensor (F.silu, nn.GELU(), ...).
ActivationLike = Union[Activation, Callable[[Tensor], Tensor]]


def activation_name(activation) -> Optional[str]:
    """The name of a recognised activation ("relu"/"gelu", ``F.relu``/``F.gelu``, ``nn.ReLU()``,
    exact ``nn.GELU()``), else None (any other callable is kept as it is)."""
    if isinstance(activation, str):
        return activation if activation in ACTIVATIONS else None
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return "relu"
    if activation is F.gelu or (isinstance(activation, nn.GELU) and activation.approximate == "none"):
        return "gelu"
    return None


def activation_fn(activation) -> Callable[[Tensor], Tensor]:
    """The function a layer applies: ``ACTIVATIONS[name]`` for a name, the callable itself else
    (an ``nn.Module`` stays a module, so its parameters, if any, are the layer's)."""
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)} or a callable, got "
                             f"{activation!r}")
        return ACTIVATIONS[activation]
    if not callable(activation):
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)} or a callable, got "
                         f"{activation!r}")
    return activation


def default(value):
    """A layer field's default, overridden in a model config (keyword-only like the base's)."""
    return field(default=value, kw_only=True)


@dataclass(frozen=True, kw_only=True)
class LayerConfig:
    """The shape of one Transformer layer; validated when built."""

    d_model: int = 512
    nhead: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: ActivationLike = "relu"
    layer_norm_eps: float = 1e-5
    norm_first: bool = False
    bias: bool = True

    def __post_init__(self):
        if self.d_model <= 0 or self.nhead <= 0 or self.d_model % self.nhead:
            raise ValueError(f"d_model ({self.d_model}) must be a positive multiple of nhead "
                             f"({self.nhead})")
        activation_fn(self.activation)  # a name we know or a callable
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dim_feedforward <= 0 or self.layer_norm_eps <= 0:
            raise ValueError(f"dim_feedforward ({self.dim_feedforward}) and layer_norm_eps "
                             f"({self.layer_norm_eps}) must be positive")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.nhead

    def layer_kwargs(self) -> dict:
        """The keyword arguments of ``EncoderLayer``/``DecoderLayer`` after ``d_model, nhead``."""
        return dict(dim_feedforward=self.dim_feedforward, dropout=self.dropout,
                    activation=self.activation, layer_norm_eps=self.layer_norm_eps,
                    norm_first=self.norm_first, bias=self.bias)


@dataclass(frozen=True, kw_only=True)
class TransformerConfig(LayerConfig):
    """Everything that shapes an encoder-decoder stack (``nn.Transformer``'s constructor args)."""

    num_encoder_layers: int = 6
    num_decoder_layers: int = 6

    def __post_init__(self):
        super().__post_init__()
        if self.num_encoder_layers < 0 or self.num_decoder_layers < 0:
            raise ValueError("layer counts must be >= 0")
