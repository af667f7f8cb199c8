r"""Scaled dot-product attention as message passing, without parameters.

For a target token :math:`i` with incoming edges :math:`\mathcal{N}(i)` and head :math:`h`
(Vaswani et al., arXiv:1706.03762, eq. 1, restricted to the graph):

.. math::

    s_{ij}^h = \text{scale} \cdot \langle q_i^h, k_j^h \rangle + b_{ij}^h, \qquad
    \alpha_{ij}^h = \frac{\exp(s_{ij}^h - m_i^h)}{\sum_{j' \in \mathcal{N}(i)} \exp(s_{ij'}^h - m_i^h)},
    \qquad o_i^h = \sum_{j \in \mathcal{N}(i)} \alpha_{ij}^h \, v_j^h

with :math:`m_i^h = \max_{j \in \mathcal{N}(i)} s_{ij}^h` (the exact, max-stabilised
softmax) and ``scale = 1 / sqrt(C)`` by default.  Each edge ``j -> i`` carries the
message :math:`\alpha_{ij} v_j`; each target sums its messages.

A target with no incoming edge (or whose edges all have bias ``-inf`` for a head)
receives a zero output for that head, as ``torch.nn.functional.scaled_dot_product_attention``
returns for a fully masked row.

Backends (``backend=``), all exact, all checked against ``"reference"``:

* ``"reference"`` -- PyG message passing (:class:`GraphAttentionPropagation`): the literal
  definition; keeps (num_edges, H, C) tensors for backward.
* ``"chunked"`` -- chunks of target nodes in torch (:mod:`gnn_transformer.chunked`): no
  per-edge, per-feature tensor for the whole graph; for CPU, runs on any device.
* ``"fused"`` -- Triton kernels on block-sparse tiles (:mod:`gnn_transformer.kernels`):
  online softmax, backward by recomputation, nothing per edge kept; CUDA (or Triton's
  interpreter).  Needs each edge at most once.
* ``"auto"`` -- :func:`select_backend`: ``"fused"`` for CUDA tensors in float16, bfloat16
  or float32 when Triton is installed and the graph repeats no edge; ``"chunked"`` otherwise.

The fast backends run on a :class:`~gnn_transformer.prepared.PreparedGraph`; given a plain
``edge_index`` they prepare it on every call, so pass a prepared graph to pay once.  Their
attention weights (``return_attention_weights=True``) come from a second pass that
recomputes them from the saved log-sum-exp: exact, but detached from autograd (use
``"reference"`` to differentiate through the weights).
"""
from __future__ import annotations

import importlib.util
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from ._validation import check_attention_inputs
from .chunked import chunked_graph_attention
from .prepared import PreparedGraph

__all__ = ["graph_attention", "edge_softmax", "GraphAttentionPropagation", "available_backends", "select_backend"]

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def edge_softmax(score: Tensor, index: Tensor, num_targets: int) -> Tensor:
    r"""Exact softmax of per-edge scores over the incoming edges of each target.

    Args:
        score: (num_edges, H) scores; ``-inf`` removes an edge for that head.
        index: (num_edges,) target of each edge.
        num_targets: number of target nodes.

    Returns:
        (num_edges, H) weights that sum to 1 over each target's incoming edges,
        or to 0 where every incoming score is ``-inf``.  No epsilon is added.
    """
    score_max = scatter(score.detach(), index, 0, num_targets, reduce="max")  # (T, H)
    score_max = torch.where(torch.isfinite(score_max), score_max, torch.zeros_like(score_max))
    numerator = (score - score_max[index]).exp()  # (num_edges, H), each <= 1
    denominator = scatter(numerator, index, 0, num_targets, reduce="sum")  # (T, H)
    denominator = denominator.masked_fill(denominator == 0, 1.0)  # all-blocked rows: 0 / 1
    return numerator / denominator[index]


class GraphAttentionPropagation(MessagePassing):
    r"""The reference backend: attention as PyG ``edge_updater`` + ``propagate``.

    ``edge_update`` computes the scores and their softmax per edge,
    ``message`` weights the value of the source, and the ``"sum"`` aggregation adds
    the messages at each target.  It keeps (num_edges, H, C) tensors for the
    backward pass: exact and literal, not fast.
    """

    def __init__(self) -> None:
        super().__init__(aggr="sum", node_dim=0)

    def attend(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        edge_index: Tensor,
        edge_bias: Tensor | None,
        scale: float,
        dropout_p: float = 0.0,
    ) -> tuple[Tensor, Tensor]:
        """Run attention on ``edge_index``; returns (out (T, H, Cv), weights (num_edges, H))."""
        size = (key.size(0), query.size(0))
        weights = self.edge_updater(edge_index, query=query, key=key, edge_bias=edge_bias, scale=scale, size=size)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p)
        out = self.propagate(edge_index, value=value, weights=weights, size=size)  # (T, H, Cv)
        return out, weights

    def edge_update(self, query_i: Tensor, key_j: Tensor, edge_bias: Tensor | None, scale: float,
                    index: Tensor, size_i: int) -> Tensor:
        score = (query_i * key_j).sum(dim=-1) * scale  # (num_edges, H)
        if edge_bias is not None:
            score = score + edge_bias
        return edge_softmax(score, index, size_i)

    def message(self, value_j: Tensor, weights: Tensor) -> Tensor:
        return weights.unsqueeze(-1) * value_j  # (num_edges, H, Cv)


_REFERENCE = GraphAttentionPropagation()


def _reference_backend(q, k, v, graph, edge_bias, scale, dropout_p, need_weights):
    edge_index = graph.edge_index if isinstance(graph, PreparedGraph) else graph
    return _REFERENCE.attend(q, k, v, edge_index, edge_bias, scale, dropout_p)


def _fused_backend(q, k, v, graph, edge_bias, scale, dropout_p, need_weights):
    from .kernels import fused_graph_attention  # imports Triton and defines the kernels on first use

    return fused_graph_attention(q, k, v, graph, edge_bias, scale, dropout_p, need_weights)


_BACKENDS: dict[str, Callable] = {"reference": _reference_backend, "chunked": chunked_graph_attention}
if TRITON_AVAILABLE:
    _BACKENDS["fused"] = _fused_backend


def available_backends() -> list[str]:
    """Names accepted by ``graph_attention(..., backend=...)`` in this installation."""
    return sorted([*_BACKENDS, "auto"])


def check_backend(backend: str) -> str:
    """Return ``backend`` if this installation runs it; else raise an error that says what to do."""
    if backend == "fused" and "fused" not in _BACKENDS:
        raise ImportError("backend='fused' runs Triton kernels, but Triton is not installed: "
                          "pip install 'gnn-transformer[gpu]' (Linux x86-64), or use backend='chunked' or 'auto'")
    if backend not in available_backends():
        raise ValueError(f"unknown backend {backend!r}; available: {available_backends()}")
    return backend


def select_backend(q: Tensor, graph: PreparedGraph) -> str:
    """The rule of ``backend="auto"``.

    ``"fused"`` when ``q`` is a CUDA tensor in float16, bfloat16 or float32, Triton is
    installed and no edge occurs twice (the fused tiles are bitmasks); ``"chunked"``
    otherwise (CPU tensors, float64, graphs with repeated edges, no Triton).  The
    ``"reference"`` path is never chosen automatically: it is the definition, not a fast path.
    """
    if q.is_cuda and q.dtype in FUSED_DTYPES and "fused" in _BACKENDS and not graph.has_duplicates:
        return "fused"
    return "chunked"


def graph_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edge_index: Tensor | PreparedGraph,
    edge_bias: Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "reference",
    return_attention_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Multi-head scaled dot-product attention over the edges of a token graph.

    See the module docstring for the equations.

    Args:
        q: queries of the targets, (T, H, C).
        k: keys of the sources, (S, H, C).
        v: values of the sources, (S, H, Cv).
        edge_index: (2, num_edges), row 0 = source j, row 1 = target i; or a
            :class:`~gnn_transformer.prepared.PreparedGraph` of it (for ``T`` targets and
            ``S`` sources), which the fast backends reuse across calls.
        edge_bias: additive per-edge score bias, (num_edges, H), or (num_edges, 1) /
            (num_edges,) for one bias shared by all heads.  ``-inf`` removes the edge
            for that head.
        scale: score scale; default ``1 / sqrt(C)``.
        dropout_p: dropout probability on the attention weights (applied whenever > 0,
            as in ``F.scaled_dot_product_attention``; modules pass 0 in eval mode).
        backend: ``"reference"`` (PyG message passing), ``"chunked"``, ``"fused"`` or
            ``"auto"`` (see the module docstring and :func:`select_backend`).
        return_attention_weights: also return the per-edge, per-head weights
            (after dropout, as torch returns them; detached for the fast backends).

    Returns:
        out of shape (T, H, Cv), and weights of shape (num_edges, H) if requested.

    Example::

        >>> q = k = v = torch.randn(3, 2, 4)            # 3 tokens, 2 heads, head size 4
        >>> out = graph_attention(q, k, v, complete([3]))
        >>> out.shape
        torch.Size([3, 2, 4])
    """
    backend = check_backend(backend)
    edge_bias = check_attention_inputs(q, k, v, edge_index, edge_bias)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else float(scale)
    graph = edge_index
    if backend != "reference" and not isinstance(graph, PreparedGraph):
        graph = PreparedGraph(graph, k.size(0), q.size(0))  # paid on every call: pass a PreparedGraph to pay once
    if backend == "auto":
        backend = select_backend(q, graph)
    out, weights = _BACKENDS[backend](q, k, v, graph, edge_bias, scale, dropout_p, return_attention_weights)
    return (out, weights) if return_attention_weights else out
