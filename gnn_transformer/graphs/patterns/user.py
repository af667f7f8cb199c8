r"""User graphs as attention patterns: from networkx, from PyG, and disjoint unions of them.

Any graph on the tokens is a pattern: an edge :math:`u \to v` says token :math:`v` (the
query) attends to token :math:`u` (the key).  Undirected graphs attend both ways.
"""
from __future__ import annotations

from itertools import chain as chain_iterables
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ...backends.validation import check_edge_index
from ._build import coalesce

__all__ = ["from_networkx", "from_pyg", "disjoint_union"]


def _self_loops(num_nodes: int, device=None) -> Tensor:
    return torch.arange(num_nodes, device=device).expand(2, -1)


def _one_networkx(graph) -> Tensor:
    import networkx as nx

    if not isinstance(graph, (nx.Graph, nx.DiGraph)):
        raise TypeError(f"from_networkx expects a networkx Graph or DiGraph (or a list of them), "
                        f"got {type(graph).__name__}")
    relabelled = nx.convert_node_labels_to_integers(graph, ordering="default")  # node i = i-th of graph.nodes
    flat = np.fromiter(chain_iterables.from_iterable(relabelled.edges()), dtype=np.int64,
                       count=2 * relabelled.number_of_edges())
    edges = torch.from_numpy(flat).view(-1, 2).t()  # (2, num_edges) rows u, v
    if not graph.is_directed():
        edges = torch.cat([edges, edges.flip(0)], dim=1)
    return edges


def from_networkx(graph, add_self_loops: bool = False) -> Tensor:
    r"""A networkx graph (or a list of graphs, as a batch) as an attention pattern.

    Node :math:`k` of the result is the :math:`k`-th node of ``graph.nodes`` (networkx keeps
    insertion order); a list of graphs becomes their disjoint union, the first graph's
    nodes first, so its lengths are ``[g.number_of_nodes() for g in graphs]``.  An edge
    ``u -> v`` of a ``DiGraph`` lets ``v`` attend to ``u``; an undirected edge works both
    ways.  Multi-edges collapse into one.

    Args:
        graph: a ``networkx.Graph``/``DiGraph``, or a sequence of them.
        add_self_loops: also let every token attend to itself (attention usually does).

    Returns:
        edge_index (2, num_edges), sorted by target then source, without duplicates.

    Example::

        >>> import networkx as nx
        >>> from_networkx(nx.path_graph(3))
        tensor([[1, 0, 2, 1],
                [0, 1, 1, 2]])
    """
    graphs = list(graph) if isinstance(graph, (list, tuple)) else [graph]
    if not graphs:
        raise ValueError("from_networkx got an empty list of graphs")
    edge_sets = [_one_networkx(g) for g in graphs]
    return disjoint_union(edge_sets, [g.number_of_nodes() for g in graphs], add_self_loops)


def from_pyg(data, add_self_loops: bool = False) -> Tensor:
    """The ``edge_index`` of a PyG ``Data`` (or a collated ``Batch``), checked, sorted and deduplicated.

    PyG's convention is this library's: row 0 holds sources (keys), row 1 targets (queries).
    """
    if getattr(data, "edge_index", None) is None:
        raise ValueError("from_pyg needs a PyG Data with an edge_index attribute")
    num_nodes = data.num_nodes
    if num_nodes is None:
        raise ValueError("from_pyg could not tell the number of nodes: set data.num_nodes")
    edge_index = data.edge_index
    check_edge_index(edge_index, num_nodes, num_nodes, "data.edge_index")
    edge_index = edge_index.long()
    if add_self_loops:
        edge_index = torch.cat([edge_index, _self_loops(num_nodes, edge_index.device)], dim=1)
    return coalesce(edge_index, num_nodes)


def disjoint_union(edge_sets: Sequence[Tensor], num_nodes: Sequence[int], add_self_loops: bool = False) -> Tensor:
    """Edge sets of separate graphs (each numbered from 0) as one batch graph, offset graph by graph."""
    if len(edge_sets) != len(num_nodes):
        raise ValueError(f"got {len(edge_sets)} edge sets but {len(num_nodes)} node counts")
    sizes = torch.tensor([int(n) for n in num_nodes], dtype=torch.long)
    offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    total = int(offsets[-1])
    shifted = []
    for index, (edges, size) in enumerate(zip(edge_sets, sizes.tolist())):  # one step per graph
        check_edge_index(edges, size, size, f"edge set {index}")
        shifted.append(edges.long().cpu() + offsets[index])
    if add_self_loops:
        shifted.append(_self_loops(total))
    device = edge_sets[0].device if len(edge_sets) else None
    return coalesce(torch.cat(shifted, dim=1), total).to(device)
