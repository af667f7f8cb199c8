r"""Partitions: which rank owns which node, and where a node's row sits on its owner.

Rank ``r`` holds the rows of its nodes in increasing global order: the node features a
rank passes to the distributed backend are ``x[partition.nodes(r)]`` of the global ``x``.
The default is contiguous ranges (the first ``N mod P`` ranks get one node more, as
:func:`torch.tensor_split`); any ``owner`` vector is accepted, so a partition may follow the
graph's clusters and a rank may own no node at all.

Shapes:
    owner: (N,) int64, rank of each node;  local_index: (N,) position of a node on its owner;
    counts: (P,) nodes per rank.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Partition", "contiguous_partition", "cut_rows"]


class Partition:
    """The nodes of ``len(owner)`` tokens split over ``world_size`` ranks.

    Args:
        owner: (N,) integer tensor, ``owner[i]`` the rank holding node ``i``.
        world_size: number of ranks P.
        name: what the partition splits (for error messages).
    """

    def __init__(self, owner: Tensor, world_size: int, name: str = "partition") -> None:
        if not isinstance(owner, Tensor) or owner.dim() != 1 or owner.dtype.is_floating_point \
                or owner.dtype == torch.bool:
            raise TypeError(f"{name} must be a 1-D integer tensor (the rank of each node), got "
                            f"{type(owner).__name__ if not isinstance(owner, Tensor) else (owner.dtype, tuple(owner.shape))}")
        owner = owner.detach().to("cpu", torch.int64)
        if owner.numel() and (int(owner.min()) < 0 or int(owner.max()) >= world_size):
            raise ValueError(f"{name} assigns nodes to ranks {int(owner.min())}..{int(owner.max())}, but the process "
                             f"group has ranks 0..{world_size - 1}")
        self.owner, self.world_size, self.name = owner, world_size, name
        self.counts = torch.bincount(owner, minlength=world_size)  # (P,)
        order = torch.argsort(owner * max(owner.numel(), 1) + torch.arange(owner.numel()))  # rank-major, then id
        self.rank_major = order  # (N,) global ids of rank 0's nodes, then rank 1's, ...
        self.offsets = torch.zeros(world_size + 1, dtype=torch.int64)
        torch.cumsum(self.counts, 0, out=self.offsets[1:])
        self.position = torch.empty_like(order)  # (N,) rank-major position of each node
        self.position[order] = torch.arange(owner.numel())
        self.local_index = self.position - self.offsets[owner]  # (N,) row of each node on its owner

    @property
    def num_nodes(self) -> int:
        return self.owner.numel()

    def nodes(self, rank: int) -> Tensor:
        """Global ids of the nodes rank ``rank`` holds, increasing: (counts[rank],)."""
        return self.rank_major[int(self.offsets[rank]):int(self.offsets[rank + 1])]

    def fingerprint(self) -> list[int]:
        """Integers that differ (almost surely) between two different partitions."""
        weights = torch.arange(1, self.num_nodes + 1, dtype=torch.int64) * 1_000_003 % 998_244_353
        return [self.num_nodes, int((self.owner * weights).sum())]

    def __repr__(self) -> str:
        return f"Partition({self.name}, counts={self.counts.tolist()})"


def contiguous_partition(num_nodes: int, world_size: int, name: str = "partition") -> Partition:
    """Contiguous ranges: rank r holds nodes ``tensor_split(arange(N), P)[r]``."""
    owner = torch.empty(num_nodes, dtype=torch.int64)
    for rank, part in enumerate(torch.tensor_split(torch.arange(num_nodes), world_size)):
        owner[part] = rank
    return Partition(owner, world_size, name)


def cut_rows(edge_index: Tensor, sources: Partition, targets: Partition | None = None) -> Tensor:
    """Rows each rank sends in halo exchange: the distinct (receiving rank, source) pairs of the edge cut.

    A source j of rank r is sent once to every other rank that owns a target of one of j's
    edges; nothing else moves.  Counted from the graph alone (no process group), so the
    communication of a layer can be predicted before any process starts
    (:func:`gnn_transformer.analysis.complexity_table`); a rank's
    :class:`~gnn_transformer.backends.distributed.DistributedGraph` sends exactly its entry.

    Args:
        edge_index: (2, num_edges) the global graph.
        sources: the partition of the source nodes; targets: of the target nodes (default: ``sources``).

    Returns:
        (P,) int64, rows sent by each rank.
    """
    targets = sources if targets is None else targets
    src, tgt = edge_index.detach().to("cpu", torch.int64)
    to_rank, from_rank = targets.owner[tgt], sources.owner[src]
    crossing = to_rank != from_rank
    pairs = torch.unique(to_rank[crossing] * sources.num_nodes + src[crossing])  # distinct (receiver, source)
    return torch.bincount(sources.owner[pairs % sources.num_nodes], minlength=sources.world_size)  # (P,)
