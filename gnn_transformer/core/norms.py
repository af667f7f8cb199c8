r"""Per-node normalisations: LayerNorm (the paper's) and RMSNorm (T5, LLaMA).

.. math::

    \text{LayerNorm}(x) = \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}} \odot g + b, \qquad
    \text{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac{1}{d}\sum_k x_k^2 + \epsilon}} \odot g

(Zhang & Sennrich, arXiv:1910.07467).  Both act on each node alone, so in the graph view
they are the same operation on every token of every sequence.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["RMSNorm", "make_norm", "NORMS"]


class RMSNorm(nn.Module):
    r"""Root-mean-square normalisation with a learned gain and no bias, no mean subtraction.

    Args:
        normalized_shape: size of the last dimension (d_model).
        eps: added to the mean square.
        variance_dtype: dtype in which the mean square is computed (default: the input's).
            T5 computes it in float32 whatever the model's dtype (``torch.float32`` here
            reproduces that, in float64 too).

    Shapes: (..., d_model) -> (..., d_model).
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6, *, variance_dtype: torch.dtype | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.variance_dtype = variance_dtype
        self.weight = nn.Parameter(torch.ones(normalized_shape, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.size(-1) != self.normalized_shape:
            raise ValueError(f"RMSNorm expects {self.normalized_shape} features in the last dimension, "
                             f"got {x.size(-1)}")
        squares = x if self.variance_dtype is None else x.to(self.variance_dtype)
        variance = squares.pow(2).mean(-1, keepdim=True)  # (..., 1)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x

    def extra_repr(self) -> str:
        dtype = "" if self.variance_dtype is None else f", variance_dtype={self.variance_dtype}"
        return f"{self.normalized_shape}, eps={self.eps}{dtype}"


def _layer_norm(d_model: int, eps: float, bias: bool = True, **factory) -> nn.Module:
    return nn.LayerNorm(d_model, eps=eps, bias=bias, **factory)


def _rms_norm(d_model: int, eps: float, bias: bool = True, **factory) -> nn.Module:
    return RMSNorm(d_model, eps=eps, **factory)


NORMS: dict[str, Callable[..., nn.Module]] = {"layer": _layer_norm, "rms": _rms_norm}


def make_norm(norm: str | Callable[..., nn.Module], d_model: int, eps: float, bias: bool = True,
              **factory) -> nn.Module:
    """A normalisation module: ``"layer"`` (``nn.LayerNorm``), ``"rms"`` (:class:`RMSNorm`, no bias), or a
    callable ``norm(d_model, eps=eps, bias=bias, device=..., dtype=...)`` returning a module."""
    if isinstance(norm, str):
        if norm not in NORMS:
            raise ValueError(f"norm should be one of {sorted(NORMS)} or a callable, not {norm!r}")
        return NORMS[norm](d_model, eps, bias, **factory)
    if not callable(norm):
        raise TypeError(f"norm must be a string or a callable, got {type(norm).__name__}")
    return norm(d_model, eps=eps, bias=bias, **factory)
