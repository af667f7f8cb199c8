r"""Who can hear whom, and after how many layers: reachability and path lengths on token graphs.

One attention layer moves information one edge (:math:`j \to i`); the residual connection
keeps what a token already had.  After :math:`m` stacked layers token :math:`i` has heard
from token :math:`j` exactly when a path :math:`j \to \dots \to i` of at most :math:`m`
edges exists, so the number of layers a stack needs is a path length of its graph
("maximum path length", Table 1 of arXiv:1706.03762).

All computations are vectorised over tokens: boolean reachability matrices multiplied
as dense or sparse float matrices (exact for up to :math:`2^{24}` nodes), with Python
loops only over path lengths or layers.  They hold (N, N) matrices: meant for analysis,
one sequence or a modest batch at a time.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..graphs.distances import _hears, adjacency, shortest_path_lengths  # re-exported: they live with the graphs

__all__ = ["adjacency", "max_path_length", "shortest_path_lengths", "reachable"]


def max_path_length(edge_index: Tensor | Sequence[Tensor], num_nodes: int) -> int:
    r"""The smallest number of stacked layers after which every token has heard every token it ever will.

    For one graph used by every layer this is the longest shortest path between two
    tokens that are connected at all (self-loops aside): 1 for the complete and the
    causal graph, :math:`n - 1` for a chain, :math:`\lceil (n - 1) / r \rceil` for a
    window of radius :math:`r`.  Pairs that no path joins (other sequences of a batch,
    other blocks of :func:`~gnn_transformer.graphs.patterns.block_local`) do not count.

    For a list of edge sets (one per layer, repeated in order as the stack grows) it is
    the number of layers after which the set of heard tokens stops growing: for example
    dilated convolutions with dilations :math:`1, k, k^2, \dots` give
    :math:`\lceil \log_k n \rceil`.

    Method: for one graph, reachability within :math:`2^t` steps by repeated squaring of
    :math:`A + I`, then binary lifting to the exact length (:math:`O(N^3 \log n)` dense
    matrix products); for a list, one sparse product per layer until a whole round of the
    list adds nothing (:math:`O(\text{layers} \cdot \text{edges} \cdot N)`).

    Args:
        edge_index: (2, num_edges), or a list with one (2, num_edges_l) per layer.
        num_nodes: N.

    Returns:
        the number of layers (0 when no token hears another).
    """
    if isinstance(edge_index, (list, tuple)):
        return _layers_until_closed([adjacency(e, num_nodes, self_loops=True, sparse=True) for e in edge_index],
                                    num_nodes)
    step = adjacency(edge_index, num_nodes, self_loops=True) > 0  # (N, N) within one layer
    within = [step]  # within[t]: heard within 2^t layers
    while True:
        doubled = _hears(within[-1].float(), within[-1])
        if torch.equal(doubled, within[-1]):
            break
        within.append(doubled)
    closure = within[-1]
    identity = torch.eye(num_nodes, dtype=torch.bool, device=step.device)
    if torch.equal(closure, identity):
        return 0
    heard, layers = identity, 0  # largest count of layers that does not reach the closure yet
    for t in range(len(within) - 1, -1, -1):
        candidate = _hears(within[t].float(), heard)
        if not torch.equal(candidate, closure):
            heard, layers = candidate, layers + 2 ** t
    return layers + 1


def _layers_until_closed(steps: list[Tensor], num_nodes: int) -> int:
    if not steps:
        raise ValueError("max_path_length got an empty list of edge sets: give one per layer")
    heard = torch.eye(num_nodes, dtype=torch.bool, device=steps[0].device)
    layer, last_growth, quiet = 0, 0, 0
    while quiet < len(steps):  # a whole round of the list without growth: closed for good
        grown = _hears(steps[layer % len(steps)], heard)
        layer += 1
        if torch.equal(grown, heard):
            quiet += 1
        else:
            heard, last_growth, quiet = grown, layer, 0
    return last_growth


def reachable(edge_index: Tensor, num_nodes: int, num_layers: int | None = None) -> Tensor:
    r"""Which token has heard which: (N, N) bool, entry :math:`(i, j)` true when a path
    :math:`j \to \dots \to i` of at most ``num_layers`` edges exists (any length when ``None``).
    Every token has heard itself."""
    step = adjacency(edge_index, num_nodes, self_loops=True, sparse=True)
    heard = torch.eye(num_nodes, dtype=torch.bool, device=edge_index.device)
    layers = 0
    while num_layers is None or layers < num_layers:
        grown = _hears(step, heard)
        layers += 1
        if torch.equal(grown, heard):
            break
        heard = grown
    return heard
