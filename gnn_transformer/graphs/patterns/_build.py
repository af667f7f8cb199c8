"""Building blocks shared by the pattern builders: layouts, offsets, unions, the causal restriction.

Every builder ends in :func:`coalesce`, which sorts the edges by target, then source,
and removes duplicates, so patterns compose by :func:`union`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..builders import LengthsLike, as_lengths, batch_vector, lengths_to_ptr


@dataclass(frozen=True)
class Layout:
    """Where the tokens of a ragged batch sit: one entry per token unless said otherwise."""

    lengths: Tensor  # (B,)
    ptr: Tensor  # (B + 1,) first node of each sequence
    batch: Tensor  # (N,) sequence of each token
    position: Tensor  # (N,) position inside its sequence
    length: Tensor  # (N,) length of the token's sequence

    @classmethod
    def of(cls, lengths: LengthsLike) -> "Layout":
        lengths = as_lengths(lengths)
        ptr = lengths_to_ptr(lengths)
        batch = batch_vector(lengths)
        position = torch.arange(batch.numel(), device=lengths.device) - ptr[batch]
        return cls(lengths, ptr, batch, position, lengths[batch])

    @property
    def num_nodes(self) -> int:
        return self.batch.numel()


def check_positive(value: int, name: str, minimum: int = 1) -> int:
    """An integer option of a pattern, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def coalesce(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Sort edges by target, then source, and drop duplicates: (2, num_edges) -> (2, num_unique)."""
    source, target = edge_index
    key = torch.unique(target * num_nodes + source)  # sorted ascending
    return torch.stack([key % num_nodes, key // num_nodes])


def union(*edge_sets: Tensor, num_nodes: int | None = None) -> Tensor:
    r"""The union of edge sets on the same nodes, sorted by target then source, without duplicates.

    Example::

        >>> from gnn_transformer.graphs import patterns
        >>> patterns.union(patterns.sliding_window([4], 1), patterns.global_tokens([4], num_global=1))
        tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 0, 2, 3],
                [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]])

        Longformer by hand: a window of radius 1, and token 0 global (it sends to and receives
        from every token).
    """
    if not edge_sets:
        raise ValueError("union() needs at least one edge set")
    edges = torch.cat(list(edge_sets), dim=1)  # (2, total)
    if num_nodes is None:
        num_nodes = int(edges.max()) + 1 if edges.numel() else 0
    return coalesce(edges, num_nodes)


def restrict_causal(edge_index: Tensor, position: Tensor) -> Tensor:
    r"""Keep the edges :math:`j \to i` with :math:`p_j \le p_i` (no token sees a later one).

    Args:
        edge_index: (2, num_edges) within sequences.
        position: (N,) position of every node inside its sequence.
    """
    source, target = edge_index
    return edge_index[:, position[source] <= position[target]]


def from_offsets(layout: Layout, offsets: Tensor, causal: bool = False) -> Tensor:
    r"""Edges :math:`(i + o) \to i` for every relative offset ``o`` that stays inside ``i``'s sequence.

    ``offsets`` is a 1-D integer tensor sorted ascending; the edges come out sorted by
    target, then source, without duplicates.  ``causal`` keeps ``o <= 0`` only.
    """
    offsets = offsets[offsets <= 0] if causal else offsets
    candidate = layout.position[:, None] + offsets[None, :]  # (N, K) source positions
    keep = (candidate >= 0) & (candidate < layout.length[:, None])  # (N, K)
    target, slot = keep.nonzero(as_tuple=True)  # row-major: by target, then offset
    source = layout.ptr[layout.batch[target]] + candidate[target, slot]
    return torch.stack([source, target])


def random_keys(layout: Layout, num_random: int, seed: int, causal: bool = False) -> Tensor:
    r"""``num_random`` distinct random key positions per query, uniform without replacement.

    Query ``i`` draws from the positions of its sequence (from ``0 .. p_i`` when ``causal``);
    where fewer positions exist it takes all of them and the remaining slots hold ``-1``.
    Robert Floyd's sampling algorithm, run for all queries at once (the loop is over the
    ``num_random`` slots, not over tokens).  The draws come from a CPU generator seeded
    with ``seed``, so they are the same on every device.

    Returns:
        (N, num_random) source *node* indices, ``-1`` for unused slots.
    """
    available = (layout.position + 1) if causal else layout.length  # (N,) size of the range
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(layout.num_nodes, num_random, generator=generator, dtype=torch.float64)
    uniform = uniform.to(available.device)
    chosen = torch.full((layout.num_nodes, num_random), -1, dtype=torch.long, device=available.device)
    for slot in range(num_random):
        top = available - num_random + slot  # (N,) Floyd's j: draw from 0..j
        draw = (uniform[:, slot] * (top + 1).clamp(min=1)).long().clamp(max=top.clamp(min=0))  # (N,)
        seen = (chosen[:, :slot] == draw[:, None]).any(dim=1)
        pick = torch.where(seen, top, draw)
        chosen[:, slot] = torch.where(top >= 0, pick, torch.full_like(pick, -1))
    start = layout.ptr[layout.batch]  # (N,) first node of each query's sequence
    return torch.where(chosen >= 0, chosen + start[:, None], chosen)
