"""How the core modules call each other: graph-native or torch-style, and graphs prepared once.

Every module has two calls, both reached through ``module(...)`` (so that forward hooks and
pre-hooks fire as in torch): a torch-style call on padded tensors and masks, and a graph-native
call on node features and an edge set.  ``forward`` tells them apart with :func:`is_graph_call`.

Validate once, trust after: the outermost graph-native call turns a plain ``edge_index`` into a
:class:`~gnn_transformer.backends.prepared.PreparedGraph` (which checks the edges when it is
built) with :func:`prepare_edges`, and hands the prepared graph down; inner calls receive
prepared graphs and do not look at the edges again (no host synchronisation).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..backends.prepared import PreparedGraph
from ..backends.validation import as_edge_index
from ..errors import MaskTypeError


def is_edge_set(value) -> bool:
    """An edge index (integer tensor), a prepared graph, or a list of them (one per layer)."""
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(is_edge_set(v) for v in value)
    if isinstance(value, Tensor):
        return not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)
    return hasattr(value, "edge_index")


def is_graph_call(args: tuple, kwargs: dict, position: int, name: str, mask_name: str | None = None) -> bool:
    """Whether the argument ``name`` (keyword, or positional at ``position``) is an edge set.

    torch's masks are bool or floating-point tensors; edge indices are integer tensors.
    Passing ``name`` by keyword always makes the call graph-native (its value may be ``None``
    where a module runs without edges, e.g. a recurrent step of linear attention).  An integer
    tensor at ``position`` that cannot be an edge index (not of shape (2, num_edges)) is refused
    with :class:`~gnn_transformer.errors.MaskTypeError` naming both readings: torch's call has the
    mask ``mask_name`` there, and a torch mask is bool or floating point.
    """
    if name in kwargs:
        return True
    if len(args) <= position or not is_edge_set(args[position]):
        return False
    value = args[position]
    if isinstance(value, Tensor) and (value.dim() != 2 or value.size(0) != 2):
        as_mask = f" or, in the torch-style call, {mask_name}" if mask_name else ""
        raise MaskTypeError(
            f"argument {position} is an integer tensor of shape {tuple(value.shape)} ({value.dtype}): as {name} it "
            f"must have shape (2, num_edges){as_mask}, a mask must be bool or floating point"
        )
    return True


def prepare_edges(edge_index, num_sources: int, num_targets: int, attention=None, *, memo: dict | None = None):
    """A plain ``edge_index`` as a :class:`PreparedGraph` for these node counts, checked once here.

    With ``attention`` (the module that will run on it), the graph is also prepared for that
    module's backend, heads and head size (:meth:`PreparedGraph.prepare`: the chunk plan, the
    tiles), so that the calls inside read nothing back from the device.  Prepared graphs are
    prepared for the backend too (idempotent: what is built is kept); ``None`` passes through;
    anything else is left for the attention to reject with a ``TypeError``.  With ``memo`` (a
    dict shared over the layers of one call) each distinct edge tensor is prepared once per
    node counts.
    """
    if isinstance(edge_index, Tensor):
        key = (id(edge_index), num_sources, num_targets)
        if memo is not None and key in memo:
            return memo[key]
        # uint8, int16, ... -> int64 (lossless), as graph_attention does
        graph = PreparedGraph(as_edge_index(edge_index), num_sources, num_targets)
        if memo is not None:
            memo[key] = graph
    elif isinstance(edge_index, PreparedGraph):
        graph = edge_index
    else:
        return edge_index
    if attention is not None:
        graph.prepare(attention.backend, attention.num_heads, attention.head_dim)
    return graph


def source_count(cache, new_sources: int) -> int:
    """How many source nodes an attention with ``cache`` sees when ``new_sources`` nodes arrive.

    A :class:`~gnn_transformer.core.attention.KeyValueCache` adds its cached nodes (a filled
    static cache is used as it is); no cache, or one without source nodes, adds none.
    """
    cached = getattr(cache, "num_sources", None)
    if cached is None:
        return new_sources
    if cache.static and cache.filled:
        return cached
    return cached + new_sources


def with_weights(result, need_weights: bool) -> tuple:
    """(output, weights) from a graph-native call made with ``return_attention_weights=need_weights``."""
    return result if need_weights else (result, None)
