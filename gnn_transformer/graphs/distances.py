r"""Hop distances on token graphs: the adjacency matrix and breadth-first search from every token.

Graph algorithms that models build on (Graphormer-style distance biases in
:mod:`gnn_transformer.variants.biases`) live here, below the models; the analyses of
:mod:`gnn_transformer.analysis.paths` (reachability, maximum path length) use them too.
They hold (N, N) matrices: meant for one sequence or a modest batch at a time.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..backends.validation import check_edge_index

__all__ = ["adjacency", "shortest_path_lengths"]


def adjacency(edge_index: Tensor, num_nodes: int, self_loops: bool = False, sparse: bool = False) -> Tensor:
    r"""The float matrix :math:`A_{ij} = 1` for every edge :math:`j \to i` (row = target), (N, N).

    ``self_loops`` sets the diagonal (the residual path); ``sparse`` returns a COO tensor.
    """
    check_edge_index(edge_index, num_nodes, num_nodes)
    matrix = torch.zeros(num_nodes, num_nodes, device=edge_index.device)  # (N, N)
    matrix[edge_index[1], edge_index[0]] = 1.0
    if self_loops:
        matrix.fill_diagonal_(1.0)
    return matrix.to_sparse() if sparse else matrix


def _hears(step: Tensor, heard: Tensor) -> Tensor:
    """One more hop: ``step`` (N, N) float (dense or sparse) applied to ``heard`` (N, N) bool."""
    product = torch.sparse.mm(step, heard.float()) if step.is_sparse else step @ heard.float()
    return product > 0


def shortest_path_lengths(edge_index: Tensor, num_nodes: int, max_length: int | None = None) -> Tensor:
    r"""Hop distances: (N, N) int64, entry :math:`(i, j)` the fewest edges on a path :math:`j \to \dots \to i`.

    0 on the diagonal, -1 where no path exists (or none of at most ``max_length`` edges).
    Breadth-first search from every token at once, one sparse product per distance.
    """
    step = adjacency(edge_index, num_nodes, sparse=True)
    distance = torch.full((num_nodes, num_nodes), -1, dtype=torch.long, device=edge_index.device)
    frontier = torch.eye(num_nodes, dtype=torch.bool, device=edge_index.device)
    heard = frontier.clone()
    distance[frontier] = 0
    hops = 0
    while bool(frontier.any()) and (max_length is None or hops < max_length):
        hops += 1
        frontier = _hears(step, frontier) & ~heard
        distance[frontier] = hops
        heard |= frontier
    return distance
