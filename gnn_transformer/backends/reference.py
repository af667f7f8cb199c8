r"""The reference backend: attention as PyG message passing, the literal definition.

``edge_update`` computes each edge's score :math:`s_{ij} = \text{scale}\,\langle q_i, k_j\rangle + b_{ij}`
and its exact, max-stabilised softmax over the incoming edges of the target; ``message``
weights the source's value; the ``"sum"`` aggregation adds the messages at each target.
It keeps (num_edges, H, C) tensors for the backward pass: exact and literal, not fast.
Every other backend is checked against it.

It needs nothing prepared and reads nothing back to the host: the sizes are passed to
``propagate`` (no inference from the edges), the softmax's max and sum are scatters, and
dropout is ``F.dropout``.  Under ``torch.compile`` PyG's ``MessagePassing`` drops its own
index checks (``torch_geometric.is_compiling()``: a plain ``index_select``), so a compiled
call compiles into one graph; the edges were checked once at the library's boundary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

__all__ = ["edge_softmax", "GraphAttentionPropagation"]


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
