"""Tell a graph-native call from a torch-style (padded) call of the same module."""
from __future__ import annotations

import torch
from torch import Tensor


def is_edge_set(value) -> bool:
    """An edge index (integer tensor), a prepared graph, or a list of them (one per layer)."""
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(is_edge_set(v) for v in value)
    if isinstance(value, Tensor):
        return not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)
    return hasattr(value, "edge_index")


def is_graph_call(args: tuple, kwargs: dict, position: int, name: str) -> bool:
    """Whether the argument ``name`` (keyword, or positional at ``position``) is an edge set.

    torch's masks are bool or floating-point tensors; edge indices are integer tensors.
    """
    if name in kwargs:
        return True
    return len(args) > position and is_edge_set(args[position])
