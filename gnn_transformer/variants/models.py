r"""The variants papers compare, as options of the same graph layers ("Do Transformer
Modifications Transfer Across Implementations and Applications?", arXiv:2102.11972).

Every variant is either per node or per edge, so none needs a new attention:

=====================  ==========================================================  =================
variant                what it changes                                             where in the graph
=====================  ==========================================================  =================
pre / post norm        ``norm_first``: :math:`x + f(N(x))` or :math:`N(x + f(x))`  per node
LayerNorm / RMSNorm    ``norm="layer" | "rms"`` (:class:`.RMSNorm`)                per node
feed-forward           ``relu``, ``gelu``, ``gelu_tanh``, ``silu``; gated           per node
                       ``swiglu``, ``geglu``, ``reglu`` (arXiv:2002.05202)
absolute positions     sinusoidal (the paper's) or learned, added to embeddings    node attribute
rotary positions       :class:`RotaryEmbedding` rotates q and k of each node       per node, before
                       (arXiv:2104.09864)                                          message passing
ALiBi / T5 biases      :func:`.alibi_bias`,                                        per edge, shared
                       :class:`.RelativePositionBias`                              by all layers
tied embeddings        output layer shares the token embedding                     per node
=====================  ==========================================================  =================

:class:`GraphVariantModel` puts them together in one encoder-only or decoder-only model (a
:class:`~gnn_transformer.core.model.GraphSequenceModel` with the variants' parts); the layers
themselves take the per-layer options (``norm``, ``gated``, ``qk_transform``,
``attention_scale``) directly.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.embedding import SinusoidalPositionalEncoding
from ..core.layers import GraphTransformerEncoderLayer
from ..core.model import GraphSequenceModel
from ..core.norms import make_norm
from ..core.stacks import GraphTransformerEncoder
from .biases import RelativePositionBias, alibi_bias

__all__ = ["RotaryEmbedding", "LearnedPositionalEmbedding", "ScaledEmbedding", "ALiBiBias", "GraphVariantModel",
           "FEED_FORWARDS", "POSITIONS", "feed_forward_options"]

# name -> (activation, gated)
FEED_FORWARDS = {
    "relu": ("relu", False), "gelu": ("gelu", False), "gelu_tanh": ("gelu_tanh", False), "silu": ("silu", False),
    "reglu": ("relu", True), "geglu": ("gelu", True), "swiglu": ("silu", True),
}
POSITIONS = ("sinusoidal", "learned", "rotary", "alibi", "t5", "none")


def feed_forward_options(name: str) -> dict:
    """``"swiglu"`` -> ``{"activation": "silu", "gated": True}``, and so on (see :data:`FEED_FORWARDS`)."""
    if name not in FEED_FORWARDS:
        raise ValueError(f"feed_forward should be one of {sorted(FEED_FORWARDS)}, not {name!r}")
    activation, gated = FEED_FORWARDS[name]
    return {"activation": activation, "gated": gated}


def _check_positions(position: Tensor) -> None:
    if position.dtype.is_floating_point or position.dtype == torch.bool:
        raise TypeError(f"position must hold integers, got dtype {position.dtype}")


class RotaryEmbedding(nn.Module):
    r"""Rotary position embedding (RoFormer, arXiv:2104.09864) as a per-node ``qk_transform``.

    Each pair of channels :math:`(x_{2m}, x_{2m+1})` of a query or key at position :math:`p`
    is rotated by the angle :math:`p\,\theta_m`, :math:`\theta_m = \text{base}^{-2m/C}`:

    .. math::

        \begin{pmatrix} x'_{a} \\ x'_{b} \end{pmatrix} =
        \begin{pmatrix} \cos p\theta_m & -\sin p\theta_m \\ \sin p\theta_m & \cos p\theta_m \end{pmatrix}
        \begin{pmatrix} x_{a} \\ x_{b} \end{pmatrix}

    so that :math:`\langle R_{p_i} q_i, R_{p_j} k_j \rangle` depends on :math:`p_j - p_i` only: a
    relative position scheme computed on the nodes, before any message is sent.

    Args:
        head_dim: C (even).
        base: the frequency base (10000).
        interleaved: pair channels (0, 1), (2, 3), ... as RoFormer does; the default pairs
            channel m with m + C/2 ("rotate half", as GPT-NeoX and LLaMA do).

    Shapes: x (N, H, C), position (N,) integers -> (N, H, C).
    """

    def __init__(self, head_dim: int, base: float = 10000.0, *, interleaved: bool = False) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {head_dim}")
        self.head_dim, self.base, self.interleaved = head_dim, base, interleaved

    def forward(self, x: Tensor, position: Tensor) -> Tensor:
        _check_positions(position)
        if x.dim() != 3 or x.size(-1) != self.head_dim or position.shape != x.shape[:1]:
            raise ValueError(f"RotaryEmbedding expects x (N, H, {self.head_dim}) and position (N,), "
                             f"got {tuple(x.shape)} and {tuple(position.shape)}")
        dtype = torch.promote_types(x.dtype, torch.float32)
        exponent = torch.arange(0, self.head_dim, 2, device=x.device, dtype=dtype) / self.head_dim
        angle = position.to(dtype).unsqueeze(-1) * self.base ** -exponent  # (N, C/2)
        cos, sin = angle.cos().unsqueeze(1).to(x.dtype), angle.sin().unsqueeze(1).to(x.dtype)  # (N, 1, C/2)
        if self.interleaved:
            a, b = x[..., 0::2], x[..., 1::2]  # (N, H, C/2)
            return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
        a, b = x.chunk(2, dim=-1)
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)  # (N, H, C)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}, interleaved={self.interleaved}"


class LearnedPositionalEmbedding(nn.Embedding):
    """A learned vector per position (GPT-2, BERT, BART), read at ``position + offset``.

    ``offset`` is 2 in BART, whose table keeps two extra rows in front.

    Shapes: position (N,) integers -> (N, d_model).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, offset: int = 0, device=None, dtype=None) -> None:
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        self.offset = offset

    def forward(self, position: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The vectors of ``position``, in ``dtype`` if given (the table's otherwise)."""
        _check_positions(position)
        index = position + self.offset
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_embeddings):
            raise ValueError(f"positions must lie in [{-self.offset}, {self.num_embeddings - self.offset}) for this "
                             f"table of {self.num_embeddings} rows, got {int(position.min())} to {int(position.max())}")
        vectors = super().forward(index)  # (N, d_model)
        return vectors if dtype is None else vectors.to(dtype)


class ScaledEmbedding(nn.Embedding):
    r"""A token embedding multiplied by a constant (:math:`\sqrt{d_\text{model}}` in the paper); the
    parameter keeps ``nn.Embedding``'s name (``weight``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, scale: float, device=None, dtype=None) -> None:
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)
        self.scale = scale

    def forward(self, tokens: Tensor) -> Tensor:
        return super().forward(tokens) * self.scale  # (N, d_model)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:g}"


class ALiBiBias(nn.Module):
    """ALiBi's fixed bias as a part of a model: :func:`~gnn_transformer.variants.biases.alibi_bias` of every edge.

    ``key_position`` (the sources' positions, when they are another node set: the cached nodes of
    a decoding step) defaults to ``position``.

    Shapes: edge_index (2, num_edges), position (N,) -> (num_edges, H).
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads

    def forward(self, edge_index: Tensor, position: Tensor, key_position: Tensor | None = None) -> Tensor:
        return alibi_bias(edge_index, position, key_position, num_heads=self.num_heads)  # (num_edges, H)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


class GraphVariantModel(GraphSequenceModel):
    r"""An encoder-only or decoder-only model whose variant options are arguments.

    A :class:`~gnn_transformer.core.model.GraphSequenceModel` with the variants' parts:
    embeddings (optionally :math:`\times\sqrt{d_\text{model}}`), a position scheme (absolute
    positions added to the embeddings, rotary positions inside every attention, or a
    relative bias per edge), a stack of :class:`GraphTransformerEncoderLayer` with the
    chosen norm and feed-forward, a final norm for pre-norm stacks, and an output layer
    (tied to the embedding or not).  The graph decides encoder (``graph=graphs.complete``) or
    decoder (``graphs.causal``); a decoder with T5 biases wants ``bidirectional=False``.

    Args:
        vocab_size, d_model, nhead, num_layers, dim_feedforward, dropout: model sizes.
        norm_first: pre-norm (True) or post-norm (False, as the original Transformer).
        norm: ``"layer"`` or ``"rms"``.
        feed_forward: one of :data:`FEED_FORWARDS`.
        positions: one of :data:`POSITIONS`.
        max_positions: rows of the learned position table.
        tie_weights: the output layer shares the token embedding.
        scale_embedding: multiply token embeddings by :math:`\sqrt{d_\text{model}}`.
        bias: biases in linear layers and LayerNorms.
        rotary_base, num_buckets, max_distance, bidirectional: parameters of the rotary and T5 schemes.
        graph: the graph the model attends over, as in ``GraphSequenceModel`` (default: not declared).

    Input: a PyG ``Data`` (or batch) with ``x`` token ids, ``position`` and ``edge_index``
    (and optionally ``edge_bias``, added to the position biases).  Returns logits (N, vocab).
    """

    def __init__(self, vocab_size: int, d_model: int = 512, nhead: int = 8, num_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, *, norm_first: bool = True, norm: str = "layer",
                 feed_forward: str = "gelu", positions: str = "learned", max_positions: int = 1024,
                 tie_weights: bool = True, scale_embedding: bool = False, bias: bool = True,
                 layer_norm_eps: float = 1e-5, rotary_base: float = 10000.0, num_buckets: int = 32,
                 max_distance: int = 128, bidirectional: bool = True, backend: str = "reference",
                 device=None, dtype=None, graph=None) -> None:
        if positions not in POSITIONS:
            raise ValueError(f"positions should be one of {POSITIONS}, not {positions!r}")
        factory = {"device": device, "dtype": dtype}
        rotary = RotaryEmbedding(d_model // nhead, rotary_base) if positions == "rotary" else None
        layer = GraphTransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, layer_norm_eps=layer_norm_eps, norm_first=norm_first, bias=bias,
            **factory, **feed_forward_options(feed_forward), backend=backend, norm=norm, qk_transform=rotary,
        )
        final_norm = make_norm(norm, d_model, layer_norm_eps, bias, **factory) if norm_first else None
        encoder = GraphTransformerEncoder(layer, num_layers, final_norm)
        embed = ScaledEmbedding(vocab_size, d_model, math.sqrt(d_model), **factory) if scale_embedding \
            else nn.Embedding(vocab_size, d_model, **factory)
        nn.init.normal_(embed.weight, std=d_model ** -0.5)
        positional = relative_bias = None
        if positions == "learned":
            positional = LearnedPositionalEmbedding(max_positions, d_model, **factory)
        elif positions == "sinusoidal":
            positional = SinusoidalPositionalEncoding(d_model)
        elif positions == "t5":
            relative_bias = RelativePositionBias(nhead, num_buckets, max_distance, bidirectional, **factory)
        elif positions == "alibi":
            relative_bias = ALiBiBias(nhead)
        generator = nn.Linear(d_model, vocab_size, bias=bias, **factory)
        if tie_weights:
            generator.weight = embed.weight
        super().__init__(embed, encoder, generator, graph=graph, positional=positional, relative_bias=relative_bias,
                         dropout=dropout)
        self.d_model, self.nhead, self.positions = d_model, nhead, positions
        self.norm_first, self.scale_embedding = norm_first, scale_embedding
