r"""The plan of one rank for one graph: built once, reused by every layer and both passes.

A :class:`DistributedGraph` holds, for the rank that builds it, everything the three
strategies need, computed from the global ``edge_index`` and the partitions without any
communication (every rank holds the whole edge index; the ranks only check that they agree):

* **halo** -- the distinct remote sources its edges reference, ordered by (owner, id): these
  are the rows it receives (``receive_counts[s]`` from rank ``s``); the rows of its own
  sources that other ranks' edges reference (``send_index``, ``send_counts[t]`` to rank
  ``t``), in the order the receiver expects; and its local graph, targets its own nodes,
  sources its own rows followed by the received ones.  The halo is the edge cut.
* **ring** -- for each block owner ``o``, the edges into its targets from ``o``'s sources,
  prepared (``None`` where there is none: the block's computation is skipped).
* **head-parallel** -- the whole graph, renumbered rank-major (the order in which an
  all-to-all delivers the rows).

Shapes:
    send_index: (sum(send_counts),) local rows of the sources sent;
    halo_graph: T_r targets, S_r + sum(receive_counts) sources.
"""
from __future__ import annotations

from functools import cached_property

import torch
import torch.distributed as dist
from torch import Tensor

from ..prepared import PreparedGraph
from ..validation import check_edge_index
from .comm import Traffic
from .partition import Partition, contiguous_partition

__all__ = ["DistributedGraph", "STRATEGIES"]

STRATEGIES = ("halo", "ring", "head")


def _as_partition(partition, num_nodes: int, world_size: int, name: str) -> Partition:
    if partition is None:
        return contiguous_partition(num_nodes, world_size, name)
    if not isinstance(partition, Partition):
        partition = Partition(torch.as_tensor(partition), world_size, name)
    if partition.num_nodes != num_nodes:
        raise ValueError(f"{name} covers {partition.num_nodes} nodes, but the graph has {num_nodes}")
    if partition.world_size != world_size:
        raise ValueError(f"{name} was made for {partition.world_size} ranks, but the process group has {world_size}")
    return partition


def _edges_fingerprint(edge_index: Tensor) -> list[int]:
    e = edge_index.detach().to("cpu", torch.int64)
    weights = torch.arange(1, e.size(1) + 1, dtype=torch.int64) % 1_000_003
    return [e.size(1), int(((e[0] * 7919 + e[1] * 104_729) * weights).sum())]


class DistributedGraph:
    r"""One graph's nodes split across the ranks of a process group: this rank's plan.

    Args:
        edge_index: (2, num_edges) the **global** graph (row 0 sources, row 1 targets), the
            same on every rank.
        num_sources: S, global number of source nodes.
        num_targets: T (default S: self-attention, the targets are the sources).
        source_partition: a :class:`Partition` (or owner vector) of the S sources; contiguous
            ranges by default.
        target_partition: of the T targets; for self-attention it defaults to the source
            partition, otherwise to contiguous ranges.
        group: the process group (default: the world).  With no initialised process group
            or one rank, everything is local: the strategies call the local backends.
        check: compare the graph and partitions across ranks (one all-gather of eight
            integers per call to this constructor); a mismatch raises ``ValueError``.
        strategy: the default strategy of attention on this graph (``"halo"``, ``"ring"``,
            ``"head"``), used where the call names none (e.g. inside
            :class:`~gnn_transformer.GraphMultiheadAttention`).

    Shapes:
        the features this rank passes: queries (``num_local_targets``, H, C) of the nodes
        ``target_partition.nodes(rank)``, keys and values (``num_local_sources``, H, C) of
        ``source_partition.nodes(rank)``.
    """

    splits_across_processes = True  # what GraphMultiheadAttention asks to run this graph on the distributed backend

    def __init__(self, edge_index: Tensor, num_sources: int, num_targets: int | None = None,
                 source_partition=None, target_partition=None, group=None, check: bool = True,
                 strategy: str = "halo") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        self.strategy = strategy
        self_attention = num_targets is None
        num_targets = num_sources if self_attention else num_targets
        check_edge_index(edge_index, num_sources, num_targets)
        self.group = group
        self.distributed = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size(group) if self.distributed else 1
        self.rank = dist.get_rank(group) if self.distributed else 0
        self.edge_index = edge_index.detach().cpu()
        self.num_sources, self.num_targets = num_sources, num_targets
        self.sources = _as_partition(source_partition, num_sources, self.world_size, "source_partition")
        if target_partition is None and self_attention:
            self.targets = self.sources
        else:
            self.targets = _as_partition(target_partition, num_targets, self.world_size, "target_partition")
        self.traffic = Traffic()
        if check and self.world_size > 1:
            self._check_agreement()
        src, tgt = self.edge_index
        mine = self.targets.owner[tgt] == self.rank
        self.local_edges = self.edge_index[:, mine]  # (2, E_r) global ids, this rank's targets
        self.local_edge_ids = mine.nonzero().squeeze(1)  # (E_r,) positions in the user's edge order

    # ---------------------------------------------------------------- checks
    def _check_agreement(self) -> None:
        mine = torch.tensor([self.num_sources, self.num_targets, *_edges_fingerprint(self.edge_index),
                             *self.sources.fingerprint(), *self.targets.fingerprint()], dtype=torch.int64)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine, group=self.group)
        parts = {"node counts": slice(0, 2), "edge_index": slice(2, 4), "source_partition": slice(4, 6),
                 "target_partition": slice(6, 8)}
        for what, where in parts.items():
            differ = [r for r, g in enumerate(gathered) if not torch.equal(g[where], gathered[0][where])]
            if differ:
                raise ValueError(f"the ranks disagree on the graph's {what}: ranks {differ} differ from rank 0; "
                                 f"build the DistributedGraph from the same global edge_index and partitions on every rank")

    def check_features(self, q: Tensor, k: Tensor, v: Tensor) -> None:
        """Check that q, k, v hold this rank's share of the targets and sources."""
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, Tensor) or t.dim() != 3:
                raise ValueError(f"{name} must have shape (num_local_nodes, num_heads, head_dim), got "
                                 f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
        if q.size(0) != self.num_local_targets:
            raise ValueError(f"q has {q.size(0)} rows, but rank {self.rank} holds {self.num_local_targets} of the "
                             f"{self.num_targets} target nodes (target_partition.nodes({self.rank}))")
        for name, t in (("k", k), ("v", v)):
            if t.size(0) != self.num_local_sources:
                raise ValueError(f"{name} has {t.size(0)} rows, but rank {self.rank} holds {self.num_local_sources} "
                                 f"of the {self.num_sources} source nodes (source_partition.nodes({self.rank}))")
        if not (q.size(1) == k.size(1) == v.size(1)) or q.size(2) != k.size(2):
            raise ValueError(f"q, k, v must agree on heads (and q, k on head size): got {tuple(q.shape)}, "
                             f"{tuple(k.shape)}, {tuple(v.shape)}")

    # ---------------------------------------------------------------- sizes
    @property
    def num_local_targets(self) -> int:
        return int(self.targets.counts[self.rank])

    @property
    def num_local_sources(self) -> int:
        return int(self.sources.counts[self.rank])

    @cached_property
    def local_graph(self) -> PreparedGraph:
        """The whole graph (world size 1)."""
        return PreparedGraph(self.edge_index, self.num_sources, self.num_targets)

    # ---------------------------------------------------------------- halo
    @cached_property
    def halo(self) -> dict:
        """``send_index``, ``send_counts``, ``receive_counts``, ``graph`` (see the module docstring)."""
        P, r = self.world_size, self.rank
        src, tgt = self.local_edges
        src_owner = self.sources.owner[src]
        needed = torch.unique(src[src_owner != r])  # (R,) distinct remote sources, by id
        needed = needed[torch.argsort(self.sources.owner[needed], stable=True)]  # by (owner, id)
        receive_counts = torch.bincount(self.sources.owner[needed], minlength=P)
        halo_row = torch.full((self.num_sources,), -1, dtype=torch.int64)
        halo_row[needed] = self.num_local_sources + torch.arange(needed.numel())
        ext_src = torch.where(src_owner == r, self.sources.local_index[src], halo_row[src])
        graph = PreparedGraph(torch.stack([ext_src, self.targets.local_index[tgt]]),
                              self.num_local_sources + needed.numel(), self.num_local_targets)
        # what the other ranks' edges need from this rank: distinct (their rank, my source) pairs
        all_src, all_tgt = self.edge_index
        out = (self.sources.owner[all_src] == r) & (self.targets.owner[all_tgt] != r)
        pairs = torch.unique(self.targets.owner[all_tgt[out]] * self.num_sources + all_src[out])  # sorted
        to_rank, sent = pairs // self.num_sources, pairs % self.num_sources
        return {"send_index": self.sources.local_index[sent], "send_counts": torch.bincount(to_rank, minlength=P).tolist(),
                "receive_counts": receive_counts.tolist(), "graph": graph, "received": needed}

    # ---------------------------------------------------------------- ring
    @cached_property
    def ring_blocks(self) -> list[PreparedGraph | None]:
        """For each source owner o, the edges from o's sources to this rank's targets (``None`` without edges)."""
        src, tgt = self.local_edges
        owner = self.sources.owner[src]
        blocks = []
        for o in range(self.world_size):
            pick = owner == o
            if not bool(pick.any()):
                blocks.append(None)
                continue
            edges = torch.stack([self.sources.local_index[src[pick]], self.targets.local_index[tgt[pick]]])
            blocks.append(PreparedGraph(edges, int(self.sources.counts[o]), self.num_local_targets))
        return blocks

    # ---------------------------------------------------------------- head-parallel
    @cached_property
    def head_graph(self) -> PreparedGraph:
        """The whole graph with sources and targets numbered rank-major."""
        src, tgt = self.edge_index
        return PreparedGraph(torch.stack([self.sources.position[src], self.targets.position[tgt]]),
                             self.num_sources, self.num_targets)

    def head_split(self, num_heads: int) -> list[int]:
        """Heads per rank: contiguous groups, the first ``H mod P`` ranks one more."""
        return [len(part) for part in torch.tensor_split(torch.arange(num_heads), self.world_size)]

    # ---------------------------------------------------------------- accounting
    def predicted_bytes(self, strategy: str, num_heads: int, head_dim: int, value_dim: int | None = None,
                        element_size: int = 8) -> dict[str, int]:
        """Bytes this rank sends to other ranks in one attention call, per pass, from the plan.

        * halo: forward, the rows others' edges reference (distinct sources of this rank
          across the cut) x H x (C + Cv); backward, the gradients of the rows it received.
        * ring: forward, the P - 1 blocks it passes on (all blocks but rank r + 1's); backward,
          those blocks again and the gradient accumulator of every block (P steps, the last one
          to the block's owner).
        * head: the all-to-all of q, k, v (node shards to head shards) and of the output back;
          the backward sends the same volumes the other way.
        """
        value_dim = head_dim if value_dim is None else value_dim
        P, r = self.world_size, self.rank
        if P == 1:
            return {"forward": 0, "backward": 0}
        row = num_heads * (head_dim + value_dim) * element_size
        if strategy == "halo":
            return {"forward": sum(self.halo["send_counts"]) * row, "backward": sum(self.halo["receive_counts"]) * row}
        if strategy == "ring":
            passed = int(self.sources.counts.sum() - self.sources.counts[(r + 1) % P])
            return {"forward": passed * row, "backward": passed * row + self.num_sources * row}
        if strategy == "head":
            heads = self.head_split(num_heads)
            others = sum(heads) - heads[r]
            n_t, n_s = self.num_local_targets, self.num_local_sources
            forward = (n_t * head_dim + n_s * (head_dim + value_dim)) * others  # q, k, v out
            forward += (self.num_targets - n_t) * heads[r] * value_dim  # the output back
            backward = ((self.num_targets - n_t) * head_dim + (self.num_sources - n_s) * (head_dim + value_dim)) \
                * heads[r] + n_t * others * value_dim
            return {"forward": forward * element_size, "backward": backward * element_size}
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")

    def __repr__(self) -> str:
        return (f"DistributedGraph(rank={self.rank}/{self.world_size}, sources={self.sources.counts.tolist()}, "
                f"targets={self.targets.counts.tolist()}, num_edges={self.edge_index.size(1)})")
