r"""Per-node input layers: token embeddings and sinusoidal positional encodings.

"We use learned embeddings to convert the input tokens ... to vectors of dimension
d_model ... In the embedding layers, we multiply those weights by sqrt(d_model)"
(arXiv:1706.03762, section 3.4), and "we add positional encodings to the input
embeddings" (section 3.5):

.. math::

    PE_{(pos, 2i)} = \sin(pos / 10000^{2i / d_\text{model}}), \qquad
    PE_{(pos, 2i+1)} = \cos(pos / 10000^{2i / d_\text{model}})

In the graph view the position is a node attribute (``data.position``), so ragged
batches need no padding and any node order works.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TokenEmbedding", "SinusoidalPositionalEncoding", "sinusoidal_encoding", "check_token_ids"]


class TokenEmbedding(nn.Module):
    r"""Token embedding scaled by :math:`\sqrt{d_\text{model}}`.

    Initialised from :math:`\mathcal{N}(0, d_\text{model}^{-1})`, so the scaled
    embedding has unit variance, like the positional encoding it is added to.

    Token ids outside ``[0, num_embeddings)`` are an error (:func:`~gnn_transformer.core.embedding.check_token_ids`), checked
    without reading a value back to the host: a model on a prepared graph makes no host sync.

    Shapes: tokens (N,) -> (N, d_model).
    """

    def __init__(self, num_embeddings: int, d_model: int, padding_idx: int | None = None, device=None, dtype=None):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(num_embeddings, d_model, padding_idx=padding_idx, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embedding.weight, std=self.d_model ** -0.5)
        if self.embedding.padding_idx is not None:
            with torch.no_grad():
                self.embedding.weight[self.embedding.padding_idx].zero_()

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    def forward(self, tokens: Tensor) -> Tensor:
        check_token_ids(tokens, self.embedding.num_embeddings)
        return self.embedding(tokens) * math.sqrt(self.d_model)  # (N, d_model)


def check_token_ids(tokens: Tensor, num_embeddings: int) -> None:
    """Token ids must lie in ``[0, num_embeddings)``; checked with ``torch._assert_async``, never read back.

    * eager, CPU tensors: the assert runs at once (there is no device to wait for) and
      fails with a ``ValueError`` that names the range and the ids given;
    * CUDA tensors, or under ``torch.compile``: a device-side assert (with the message),
      reported by the next call that synchronises, so the forward pass itself never waits
      for the device and compiles without a graph break.  (``nn.Embedding`` itself would
      only fail with an index error deep in its kernel.)
    """
    if tokens.numel() == 0:
        return
    in_range = ((tokens >= 0) & (tokens < num_embeddings)).all()  # () bool, stays on the device
    message = f"token ids must lie in [0, {num_embeddings})"
    if torch.compiler.is_compiling() or tokens.device.type != "cpu":
        torch._assert_async(in_range, message)
        return
    try:
        torch._assert_async(in_range, message)
    except RuntimeError:
        raise ValueError(f"{message}, got values from {int(tokens.min())} to {int(tokens.max())}") from None


def sinusoidal_encoding(position: Tensor, d_model: int, base: float = 10000.0, dtype=torch.float32) -> Tensor:
    """The paper's positional encoding of integer positions (N,) -> (N, d_model)."""
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, device=position.device, dtype=dtype) * (-math.log(base) / d_model)
    )  # (ceil(d_model / 2),)
    angle = position.to(dtype).unsqueeze(-1) * inv_freq  # (N, ceil(d_model / 2))
    encoding = torch.empty(*position.shape, d_model, device=position.device, dtype=dtype)
    encoding[..., 0::2] = torch.sin(angle)
    encoding[..., 1::2] = torch.cos(angle[..., : d_model // 2])
    return encoding


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding of each node's ``position`` (no parameters, no length limit).

    Shapes: position (N,) integer -> (N, d_model) in ``dtype``.
    """

    def __init__(self, d_model: int, base: float = 10000.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.base = base

    def forward(self, position: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        if position.dtype.is_floating_point:
            raise TypeError(f"position must hold integers, got dtype {position.dtype}")
        return sinusoidal_encoding(position, self.d_model, self.base, dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base}"
