r"""Relative position biases as edge features: per-edge, per-head additive score biases.

In the graph view a relative position scheme is a function of the edge: for an edge
``j -> i`` between tokens at positions :math:`p_j` (key) and :math:`p_i` (query) it adds
:math:`b_h(p_j - p_i)` to the score of head :math:`h`.  The result has shape
(num_edges, H) and goes to any attention, layer, stack or model as ``edge_bias``; on a
complete or causal graph it equals the dense float mask with the same entries.

* T5 (arXiv:1910.10683): relative positions fall into logarithmic buckets
  (:func:`t5_bucket`); each bucket has a learned bias per head
  (:class:`RelativePositionBias`, computed once and shared by all layers).
* ALiBi (arXiv:2108.12409): a fixed, head-specific linear penalty
  :math:`-m_h\,|p_i - p_j|` (:func:`alibi_slopes`, :func:`alibi_bias`).
* Graph distances: the hop distance :math:`d(j, i)` between the two tokens of an edge in a
  user graph (a parse tree, a molecule; :func:`graph_distance`), as a learned bias per
  distance and head (Graphormer's spatial encoding, arXiv:2106.05234;
  :class:`GraphDistanceBias`) or as a fixed penalty :math:`-m_h\, d(j, i)`
  (:func:`distance_bias`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["relative_position", "t5_bucket", "RelativePositionBias", "alibi_slopes", "alibi_bias", "graph_distance",
           "GraphDistanceBias", "distance_bias"]


def relative_position(edge_index: Tensor, query_position: Tensor, key_position: Tensor | None = None) -> Tensor:
    """Key position minus query position on every edge ``j -> i``: (num_edges,) integers.

    ``key_position`` defaults to ``query_position`` (self-attention on one node set).
    """
    key_position = query_position if key_position is None else key_position
    source, target = edge_index
    return key_position[source] - query_position[target]


def t5_bucket(relative: Tensor, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128) -> Tensor:
    r"""T5's bucket of each relative position (key minus query), as Mesh TensorFlow and T5 define it.

    Half of the buckets (per direction, when ``bidirectional``) hold the exact distances
    ``0 .. num_buckets/2 - 1``; the rest grow logarithmically up to ``max_distance``, beyond
    which all distances share the last bucket.  Without ``bidirectional`` (decoders), keys
    after the query (positive relative positions) fall into bucket 0.
    """
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    large = max_exact + (
        torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    r"""Learned T5 relative position bias: one scalar per (bucket, head), read off on each edge.

    .. math::

        b_{ij}^h = B[\text{bucket}(p_j - p_i), h]

    Args:
        num_heads: H.
        num_buckets, max_distance, bidirectional: as in :func:`t5_bucket` (T5 uses 32, 128,
            and ``bidirectional=False`` in its decoder).

    Shapes: edge_index (2, num_edges), positions (N,) -> (num_edges, H).
    """

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.relative_attention_bias = nn.Embedding(num_buckets, num_heads, device=device, dtype=dtype)

    def forward(self, edge_index: Tensor, query_position: Tensor, key_position: Tensor | None = None) -> Tensor:
        relative = relative_position(edge_index, query_position, key_position)
        return self.relative_attention_bias(t5_bucket(relative, self.bidirectional, self.num_buckets,
                                                      self.max_distance))  # (num_edges, H)

    def extra_repr(self) -> str:
        return f"num_buckets={self.num_buckets}, max_distance={self.max_distance}, bidirectional={self.bidirectional}"


def alibi_slopes(num_heads: int) -> Tensor:
    r"""ALiBi's head slopes: the geometric sequence :math:`2^{-8h/n}`, h = 1..n, for a power of two n.

    For other head counts the slopes of the closest smaller power of two are completed with
    every other slope of the next power of two, as in the ALiBi reference code.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be positive, got {num_heads}")

    def geometric(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    power = 2 ** math.floor(math.log2(num_heads))
    slopes = geometric(power) + geometric(2 * power)[0::2][: num_heads - power]
    return torch.tensor(slopes)


def alibi_bias(edge_index: Tensor, query_position: Tensor, key_position: Tensor | None = None,
               num_heads: int = 8, slopes: Tensor | None = None) -> Tensor:
    r"""ALiBi bias on every edge: :math:`-m_h \, |p_i - p_j|`, shape (num_edges, H).

    On causal edges this is the paper's :math:`-m_h (i - j)`; implementations that add
    :math:`m_h\, p_j` instead differ by a constant per query, which the softmax removes.
    """
    slopes = alibi_slopes(num_heads) if slopes is None else slopes
    distance = relative_position(edge_index, query_position, key_position).abs()  # (num_edges,)
    return -distance.unsqueeze(-1).to(slopes.dtype) * slopes.to(distance.device)  # (num_edges, H)


def graph_distance(edge_index: Tensor, graph: Tensor, num_nodes: int, directed: bool = False,
                   max_distance: int | None = None) -> Tensor:
    r"""Hop distance in ``graph`` between the two tokens of every attention edge: (num_edges,) int64.

    The attention runs on ``edge_index``; ``graph`` (2, num_graph_edges) is another graph on
    the same ``num_nodes`` tokens (from :func:`gnn_transformer.graphs.patterns.from_networkx`, say).
    Entry :math:`e` for the edge :math:`j \to i` is the fewest ``graph`` edges on a path from
    :math:`j` to :math:`i` (either way round unless ``directed``), ``-1`` where none exists
    (or none of at most ``max_distance`` edges).  Costs an (N, N) breadth-first search.
    """
    from ..graphs.distances import shortest_path_lengths

    if not directed:
        graph = torch.cat([graph, graph.flip(0)], dim=1)
    distance = shortest_path_lengths(graph, num_nodes, max_distance)  # (N, N): [i, j] = d(j -> i)
    return distance[edge_index[1], edge_index[0]]


class GraphDistanceBias(nn.Module):
    r"""Learned bias per (graph distance, head), Graphormer's spatial encoding.

    .. math::

        b_{ij}^h = B[\min(d(j, i), D), h], \qquad b_{ij}^h = B[D + 1, h] \text{ when no path joins them}

    Args:
        num_heads: H.
        max_distance: D; longer distances share the bucket of D.

    Shapes: distance (num_edges,) int from :func:`graph_distance` -> (num_edges, H).
    """

    def __init__(self, num_heads: int, max_distance: int = 8, device=None, dtype=None) -> None:
        super().__init__()
        if max_distance < 0:
            raise ValueError(f"max_distance must be non-negative, got {max_distance}")
        self.max_distance = max_distance
        self.distance_bias = nn.Embedding(max_distance + 2, num_heads, device=device, dtype=dtype)

    def forward(self, distance: Tensor) -> Tensor:
        bucket = torch.where(distance < 0, self.max_distance + 1, distance.clamp(max=self.max_distance))
        return self.distance_bias(bucket)  # (num_edges, H)

    def extra_repr(self) -> str:
        return f"max_distance={self.max_distance}"


def distance_bias(distance: Tensor, num_heads: int = 8, slopes: Tensor | None = None,
                  unreachable: float = float("-inf")) -> Tensor:
    r"""A fixed bias from graph distances: :math:`-m_h\, d(j, i)` with ALiBi's slopes, (num_edges, H).

    Edges whose tokens no path joins (distance ``-1``) get ``unreachable``: ``-inf`` (the
    default) removes them from the attention.
    """
    slopes = alibi_slopes(num_heads) if slopes is None else slopes
    slopes = slopes.to(distance.device)
    bias = -distance.unsqueeze(-1).to(slopes.dtype) * slopes  # (num_edges, H)
    return bias.masked_fill((distance < 0).unsqueeze(-1), unreachable)
