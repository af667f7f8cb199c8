r"""Attention as networkx graphs, and where a stack's information comes from: rollout and flow.

Graph-native calls return attention weights per edge and per head, (num_edges, H), and a
stack returns one such tensor per layer.  This module turns them into
``networkx.DiGraph`` objects -- the token graph of one layer (:func:`to_networkx`) or the
layered graph of a whole stack (:func:`layered_graph`) -- and measures how much of each
input token reaches each output token (Abnar & Zuidema, "Quantifying Attention Flow in
Transformers", arXiv:2005.00928):

* :func:`attention_rollout`: the product over layers of the head-averaged attention
  matrices, each mixed with the identity for the residual connection,

  .. math:: \tilde A_l = \operatorname{rownorm}\big(\tfrac12 A_l + \tfrac12 I\big), \qquad
            R = \tilde A_L \tilde A_{L-1} \cdots \tilde A_1 ;

* :func:`attention_flow`: the maximum flow from input token :math:`j` (layer 0) to
  output token :math:`i` (layer :math:`L`) of the layered graph whose edge capacities
  are the entries of :math:`\tilde A_l` (networkx's maximum flow).

Row :math:`i` of a matrix :math:`A_l` is the query (target) :math:`i`; column :math:`j` the key.
"""
from __future__ import annotations

from typing import Sequence

import networkx as nx
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.stacks import per_layer

__all__ = ["to_networkx", "layered_graph", "mixing_matrix", "attention_rollout", "attention_flow"]


def _head_weights(weights: Tensor, head: int | None) -> Tensor:
    """(num_edges,) or (num_edges, H) -> (num_edges,): one head, or the mean over heads."""
    weights = weights.detach()
    if weights.dim() == 1:
        return weights
    if weights.dim() != 2:
        raise ValueError(f"attention weights must have shape (num_edges, H) or (num_edges,), got {tuple(weights.shape)}")
    if head is None:
        return weights.mean(dim=1)
    if not -weights.size(1) <= head < weights.size(1):
        raise ValueError(f"head {head} does not exist: the weights have {weights.size(1)} heads")
    return weights[:, head]


def _check_weights(edge_index: Tensor, weights: Tensor) -> None:
    if weights.size(0) != edge_index.size(1):
        raise ValueError(f"got {weights.size(0)} attention weights for {edge_index.size(1)} edges: pass the "
                         f"weights of this edge set (one row per edge)")


def to_networkx(edge_index: Tensor, num_nodes: int | tuple[int, int], weights: Tensor | None = None, *,
                head: int | None = None, labels: Sequence | None = None, lengths: Sequence[int] | None = None):
    r"""A token graph, or one layer's attention, as a ``networkx.DiGraph``.

    Nodes are the tokens ``0 .. N-1`` with attributes ``label`` (from ``labels``) and, given
    the ``lengths`` of a ragged batch, ``sequence`` and ``position``.  For cross-attention
    pass ``num_nodes = (num_sources, num_targets)``: nodes are then ``("source", j)`` and
    ``("target", i)`` (attribute ``bipartite`` 0 / 1, networkx's convention) and ``labels``
    is a pair (source labels, target labels).  Each edge ``j -> i`` carries ``weight``,
    the attention of ``head`` (the mean over heads when ``None``), and ``heads``, the
    weights of every head, when ``weights`` (num_edges, H) are given.
    """
    graph = nx.DiGraph()
    bipartite = isinstance(num_nodes, (tuple, list))
    source, target = edge_index.tolist()
    if bipartite:
        num_sources, num_targets = num_nodes
        source_labels, target_labels = labels if labels is not None else (None, None)
        for side, count, names, part in (("source", num_sources, source_labels, 0),
                                         ("target", num_targets, target_labels, 1)):
            graph.add_nodes_from((side, k) for k in range(count))
            nx.set_node_attributes(graph, {(side, k): part for k in range(count)}, "bipartite")
            if names is not None:
                nx.set_node_attributes(graph, {(side, k): name for k, name in enumerate(names)}, "label")
        pairs = list(zip((("source", j) for j in source), (("target", i) for i in target)))
    else:
        graph.add_nodes_from(range(num_nodes))
        if labels is not None:
            nx.set_node_attributes(graph, dict(enumerate(labels)), "label")
        if lengths is not None:
            sequence = torch.arange(len(lengths)).repeat_interleave(torch.as_tensor(lengths)).tolist()
            starts = [0, *torch.as_tensor(lengths).cumsum(0).tolist()]
            nx.set_node_attributes(graph, dict(enumerate(sequence)), "sequence")
            nx.set_node_attributes(graph, {k: k - starts[b] for k, b in enumerate(sequence)}, "position")
        pairs = list(zip(source, target))
    if weights is None:
        graph.add_edges_from(pairs)
        return graph
    _check_weights(edge_index, weights)
    chosen = _head_weights(weights, head).tolist()
    per_head = weights.detach().reshape(weights.size(0), -1).tolist()
    graph.add_edges_from((u, v, {"weight": w, "heads": tuple(h)}) for (u, v), w, h in zip(pairs, chosen, per_head))
    return graph


def mixing_matrix(edge_index: Tensor, weights: Tensor, num_nodes: int, head: int | None = None,
                  residual: bool = True) -> Tensor:
    r"""One layer's attention as a dense row-stochastic (N, N) matrix, row = query.

    With ``residual``: :math:`\tfrac12 A + \tfrac12 I`, rows renormalised (Abnar & Zuidema's
    account of the skip connection).  Duplicate edges add up.
    """
    _check_weights(edge_index, weights)
    matrix = torch.zeros(num_nodes, num_nodes, dtype=torch.float64, device=weights.device)  # (N, N)
    matrix.index_put_((edge_index[1], edge_index[0]), _head_weights(weights, head).double(), accumulate=True)
    if residual:
        matrix = 0.5 * matrix + 0.5 * torch.eye(num_nodes, dtype=matrix.dtype, device=matrix.device)
        matrix = matrix / matrix.sum(dim=1, keepdim=True)
    return matrix


def _matrices(edge_index, weights, num_nodes, head, residual) -> list[Tensor]:
    if isinstance(weights, Tensor):
        raise TypeError("weights must be a list with one (num_edges, H) tensor per layer, as stacks return them")
    edges = per_layer(edge_index, len(weights), "edge_index")
    return [mixing_matrix(e, w, num_nodes, head, residual) for e, w in zip(edges, weights)]


def attention_rollout(edge_index: Tensor | Sequence[Tensor], weights: Sequence[Tensor], num_nodes: int, *,
                      head: int | None = None, residual: bool = True) -> Tensor:
    r"""Attention rollout: :math:`R = \tilde A_L \cdots \tilde A_1`, (N, N) float64.

    :math:`R_{ij}` is the share of input token :math:`j` in output token :math:`i`; rows sum
    to 1 (with ``residual``).  ``edge_index`` is one edge set for all layers or one per
    layer; ``weights`` one (num_edges, H) tensor per layer.
    """
    rollout = torch.eye(num_nodes, dtype=torch.float64)
    for matrix in _matrices(edge_index, weights, num_nodes, head, residual):
        rollout = matrix @ rollout.to(matrix.device)
    return rollout


def layered_graph(edge_index: Tensor | Sequence[Tensor], weights: Sequence[Tensor], num_nodes: int, *,
                  head: int | None = None, residual: bool = True, labels: Sequence | None = None):
    r"""The layered graph of a stack as a ``networkx.DiGraph``.

    Node ``(l, k)`` is token ``k`` after ``l`` layers (``l = 0`` the input).  Each nonzero
    entry of :math:`\tilde A_l` (see :func:`mixing_matrix`) becomes an edge
    ``(l - 1, j) -> (l, i)`` with ``weight`` and ``capacity`` equal to it.
    """
    graph = nx.DiGraph()
    matrices = _matrices(edge_index, weights, num_nodes, head, residual)
    for layer in range(len(matrices) + 1):
        graph.add_nodes_from(((layer, k), {"layer": layer, "token": k}) for k in range(num_nodes))
        if labels is not None:
            nx.set_node_attributes(graph, {(layer, k): name for k, name in enumerate(labels)}, "label")
    for layer, matrix in enumerate(matrices, start=1):  # one step per layer
        target, source = matrix.nonzero(as_tuple=True)
        values = matrix[target, source].tolist()
        graph.add_edges_from(((layer - 1, j), (layer, i), {"weight": w, "capacity": w})
                             for i, j, w in zip(target.tolist(), source.tolist(), values))
    return graph


def attention_flow(edge_index: Tensor | Sequence[Tensor], weights: Sequence[Tensor], num_nodes: int, *,
                   head: int | None = None, residual: bool = True, targets: Sequence[int] | None = None,
                   progress: bool = False) -> Tensor:
    r"""Attention flow: (N, N) float64, entry :math:`(i, j)` the maximum flow from input token
    :math:`j` to output token :math:`i` through the layered graph (:func:`layered_graph`).

    Only pairs that a path joins are computed (the rest are 0).  One maximum-flow problem
    per pair: meant for a sentence or two; ``targets`` restricts the output tokens.
    """
    graph = layered_graph(edge_index, weights, num_nodes, head=head, residual=residual)
    num_layers = len(weights)
    connected = attention_rollout(edge_index, weights, num_nodes, head=head, residual=residual) > 0
    flow = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    targets = range(num_nodes) if targets is None else targets
    pairs = [(i, j) for i in targets for j in connected[i].nonzero().flatten().tolist()]
    for i, j in tqdm(pairs, desc="attention flow", unit="pair", disable=not progress):
        flow[i, j] = nx.maximum_flow_value(graph, (0, j), (num_layers, i), capacity="capacity")
    return flow
