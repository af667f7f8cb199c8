r"""Attention backends: the same exact attention computed four ways, chosen in one place.

* ``"reference"`` -- PyG message passing (:mod:`~gnn_transformer.backends.reference`): the
  literal definition; keeps (num_edges, H, C) tensors for backward.
* ``"chunked"`` -- chunks of target nodes in torch (:mod:`~gnn_transformer.backends.chunked`):
  no per-edge, per-feature tensor for the whole graph; for CPU, runs on any device.
* ``"fused"`` -- Triton kernels on block-sparse tiles (:mod:`~gnn_transformer.backends.fused`):
  online softmax, backward by recomputation, nothing per edge kept; CUDA (or Triton's
  interpreter).  Needs each edge at most once.
* ``"auto"`` -- :func:`select_backend`.

:func:`run_backend` is the one dispatch: the attention module and
:func:`~gnn_transformer.functional.graph_attention` both call it.  The fast backends run on a
:class:`~gnn_transformer.backends.prepared.PreparedGraph` (CSR and block-sparse tiles), made
here from a plain ``edge_index`` when one is given.  Inputs are checked by the callers, at the
library's boundary; nothing here validates again.

Modules depend one way: ``validation`` <- ``prepared`` <- ``reference``, ``chunked``,
``fused`` <- this dispatch.  A graph prepared for a backend
(``prepare_graph(edge_index, S, T, backend=..., num_heads=H, head_dim=C)``) carries all that
backend needs, so that, for ``"reference"`` and ``"chunked"``, a forward and backward on it
make no host synchronisation and compile without graph breaks.
"""
from __future__ import annotations

import importlib.util
from typing import Callable

import torch
from torch import Tensor

from .chunked import chunked_graph_attention, prepare_chunked
from .prepared import PreparedGraph, preparation, prepare_graph
from .reference import GraphAttentionPropagation, edge_softmax

__all__ = ["run_backend", "available_backends", "check_backend", "select_backend", "PreparedGraph", "prepare_graph",
           "GraphAttentionPropagation", "edge_softmax"]

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_REFERENCE = GraphAttentionPropagation()


def _reference_backend(q, k, v, graph, edge_bias, scale, dropout_p, need_weights):
    edge_index = graph.edge_index if isinstance(graph, PreparedGraph) else graph
    return _REFERENCE.attend(q, k, v, edge_index, edge_bias, scale, dropout_p)


def _fused_backend(q, k, v, graph, edge_bias, scale, dropout_p, need_weights):
    from .fused import fused_graph_attention  # imports Triton and defines the kernels on first use

    return fused_graph_attention(q, k, v, graph, edge_bias, scale, dropout_p, need_weights)


_BACKENDS: dict[str, Callable] = {"reference": _reference_backend, "chunked": chunked_graph_attention}
if TRITON_AVAILABLE:
    _BACKENDS["fused"] = _fused_backend


@preparation("auto")
def _prepare_auto(graph: PreparedGraph, num_heads: int | None, head_dim: int | None) -> None:
    """What ``"auto"`` may pick: the chunked backend's needs, and on CUDA (with Triton) the fused one's."""
    prepare_chunked(graph, num_heads, head_dim)
    if graph.device.type == "cuda" and "fused" in _BACKENDS:
        graph.prepare("fused")


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


def run_backend(q: Tensor, k: Tensor, v: Tensor, graph: Tensor | PreparedGraph, edge_bias: Tensor | None,
                scale: float, dropout_p: float, backend: str, need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """Attention of q (T, H, C) over k, v (S, H, C) along ``graph`` with the named backend.

    Returns the output (T, H, Cv) and the weights (num_edges, H) (``None`` for the fast
    backends unless ``need_weights``).  ``edge_bias`` is (num_edges, H or 1) or ``None``.
    """
    if backend != "reference" and not isinstance(graph, PreparedGraph):  # checked by the caller: not again
        graph = PreparedGraph.from_checked(graph, k.size(0), q.size(0))  # paid on every call: prepare once instead
    if backend == "auto":
        backend = select_backend(q, graph)
    return _BACKENDS[backend](q, k, v, graph, edge_bias, scale, dropout_p, need_weights)
