r"""Scaled dot-product attention as message passing, without parameters (section 3.2.1).

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
* ``"chunked"`` -- chunks of target nodes in torch (:mod:`gnn_transformer.backends.chunked`): no
  per-edge, per-feature tensor for the whole graph; for CPU, runs on any device.
* ``"fused"`` -- Triton kernels on block-sparse tiles (:mod:`gnn_transformer.backends.fused`):
  online softmax, backward by recomputation, nothing per edge kept; CUDA (or Triton's
  interpreter).  Needs each edge at most once.
* ``"auto"`` -- :func:`select_backend`: ``"fused"`` for CUDA tensors in float16, bfloat16
  or float32 when Triton is installed and the graph repeats no edge; ``"chunked"`` otherwise.

A plain ``edge_index`` is checked once per call (shape, dtype, range: one host read in
eager mode, a device-side assert under ``torch.compile``) and then trusted; the fast
backends prepare it on every call, so pass a prepared graph to pay once.  A
:class:`~gnn_transformer.backends.prepared.PreparedGraph` was checked when it was built and
is not checked again; prepared for its backend
(``prepare_graph(edge_index, S, T, backend=..., num_heads=H, head_dim=C)``), a call on it
makes no host synchronisation, forward or backward, and compiles without graph breaks
(``"reference"`` and ``"chunked"``).  Their
attention weights (``return_attention_weights=True``) come from a second pass that
recomputes them from the saved log-sum-exp: exact, but detached from autograd (use
``"reference"`` to differentiate through the weights).
"""
from __future__ import annotations

import math

from torch import Tensor

from ..backends import PreparedGraph, available_backends, check_backend, edge_softmax, run_backend, select_backend
from ..backends.validation import (as_edge_index, check_attention_inputs, check_features, check_probability,
                                   check_scale)

__all__ = ["graph_attention", "edge_softmax", "available_backends", "select_backend"]


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
        edge_index: (2, num_edges) integer tensor (int64 or int32; other integer dtypes are
            converted to int64), row 0 = source j, row 1 = target i; or a
            :class:`~gnn_transformer.backends.prepared.PreparedGraph` of it (for ``T`` targets and
            ``S`` sources), which the fast backends reuse across calls.
        edge_bias: additive per-edge score bias, (num_edges, H), or (num_edges, 1) /
            (num_edges,) for one bias shared by all heads.  ``-inf`` removes the edge
            for that head.
        scale: score scale, finite and positive; default ``1 / sqrt(C)``.
        dropout_p: dropout probability in [0, 1) on the attention weights (applied whenever > 0,
            as in ``F.scaled_dot_product_attention``; modules pass 0 in eval mode).
        backend: ``"reference"`` (PyG message passing), ``"chunked"``, ``"fused"`` or
            ``"auto"`` (see the module docstring and :func:`select_backend`).
        return_attention_weights: also return the per-edge, per-head weights
            (after dropout, as torch returns them; detached for the fast backends).

    Returns:
        out of shape (T, H, Cv), and weights of shape (num_edges, H) if requested.

    Raises:
        TypeError: q, k, v not floating-point tensors (or of different dtypes), an ``edge_index``
            that is not an integer tensor, a ``scale`` or ``dropout_p`` that is not a number.
        ValueError: wrong shapes, node indices out of range, a ``scale`` that is not finite and
            positive, a ``dropout_p`` outside [0, 1), an unknown ``backend``.

    Example::

        >>> import torch
        >>> from gnn_transformer import graph_attention, graphs
        >>> q = k = v = torch.randn(3, 2, 4)            # 3 tokens, 2 heads, head size 4
        >>> out = graph_attention(q, k, v, graphs.complete([3]))
        >>> out.shape
        torch.Size([3, 2, 4])
    """
    check_features(q=q, k=k, v=v)  # floating tensors on one device
    scale = check_scale(scale)  # None, or finite and positive
    dropout_p = check_probability(dropout_p, "dropout_p")  # in [0, 1)
    edge_index = as_edge_index(edge_index)  # uint8, int16, ... -> int64, for every backend alike
    backend = check_backend(backend)
    edge_bias = check_attention_inputs(q, k, v, edge_index, edge_bias)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    out, weights = run_backend(q, k, v, edge_index, edge_bias, scale, dropout_p, backend, return_attention_weights)
    return (out, weights) if return_attention_weights else out
