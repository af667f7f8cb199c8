r"""Segments of a graph: disjoint runs of consecutive nodes that hold all its edges, and their plan.

A batch of sequences is such a graph: the complete, causal or any other graph of each sequence,
self-attention or cross-attention, never an edge from one sequence to another.  Segment ``i``
is a run of targets ``[t_i, t_i + m_i)`` whose edges all come from a run of sources
``[s_i, s_i + n_i)`` that no other segment's targets read.  They are found from the edges alone
(no lengths are passed): with :math:`lo_t, hi_t` the smallest and largest source of target
:math:`t`, a segment starts at target :math:`t` exactly when

.. math:: \min_{t' \ge t} lo_{t'} \;>\; \max_{t' < t} hi_{t'},

every later target reads only sources after every earlier one.  The plan pads each segment to a
multiple of one of :data:`GRANULES` rows and columns (1: unpadded; the least entries plus
:data:`GROUP_COST` per padded size, at most :data:`MAX_GROUPS` sizes) and groups segments of one
padded size; :mod:`.segments` computes attention on them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .prepared import PreparedGraph
from .tile_plan import MAX_ELEMENTS, MAX_WASTE

__all__ = ["SegmentPlan", "SegmentGroup", "find_segments", "plan_segments", "segment_plan", "GRANULES",
           "MAX_SEGMENT", "MAX_GROUPS", "GROUP_COST"]

GRANULES = (1, 8, 16, 32, 64, 128, 256)  # segments are padded to a multiple of one of these (least cost) ...
MAX_GROUPS = 8  # ... giving at most this many padded sizes
MAX_SEGMENT = 256  # longer segments are left to the tiles, which skip the empty parts of their planes
GROUP_COST = 4096  # entries' worth of work per group (its gathers, kernel calls and scatters)


@dataclass(frozen=True)
class SegmentGroup:
    """Segments padded to ``rows x cols``: their nodes (padding: ``T`` and ``S``), mask and edges.

    ``targets`` (N_s, R) and ``sources`` (N_s, W) node ids; ``mask`` (N_s, 1, R, W) bool, True
    off the edges (``None``: every pair is an edge); ``edge_ids`` the user ids of the group's
    edges and ``edge_slots`` their positions in the flattened (N_s, R, W) tiles.
    """

    rows: int
    cols: int
    targets: Tensor
    sources: Tensor
    mask: Tensor | None
    edge_ids: Tensor
    edge_slots: Tensor
    span: tuple[int, int] | None  # (first target, first source) when the segments are unpadded and back to back
    causal: bool  # every segment square, its edges exactly the pairs j <= i: the kernel's own causal mask
    cache: dict = field(default_factory=dict, compare=False)  # dtype -> the mask as factors and terms

    one_per_row = True  # a segment is alone in its rows: no merge (read by the tile math)

    def rows_of(self, x: Tensor, side: str) -> Tensor:
        """(N, H, C) -> its rows of the group, (N_s, H, R or W, C), strided: a view when the
        group has a ``span``; else gathered from ``x`` padded with a zero row (N + 1 rows)."""
        nodes = self.targets if side == "targets" else self.sources
        if self.span is not None:
            start = self.span[0] if side == "targets" else self.span[1]
            x = x[start:start + nodes.numel()]
        else:
            x = x.index_select(0, nodes.reshape(-1))
        return x.view(*nodes.shape, *x.shape[1:]).transpose(1, 2)

    def put(self, into: Tensor, per_segment: Tensor, side: str, add: bool = False) -> None:
        """Write (or add) (N_s, H, R or W, X) at the group's rows of ``into`` ((N or N + 1), H, X)."""
        nodes = self.targets if side == "targets" else self.sources
        flat = per_segment.transpose(1, 2).reshape(nodes.numel(), *per_segment.shape[1:2], *per_segment.shape[3:])
        if self.span is not None:
            start = self.span[0] if side == "targets" else self.span[1]
            rows = into[start:start + nodes.numel()]
            rows.add_(flat) if add else rows.copy_(flat)
        elif add:
            into.index_add_(0, nodes.reshape(-1), flat)
        else:
            into[nodes.reshape(-1)] = flat


@dataclass(frozen=True)
class SegmentPlan:
    """The groups of a segmented graph and the entries (rows x columns, summed) they compute."""

    groups: tuple[SegmentGroup, ...]
    entries: int
    longest: int  # rows or columns of the longest segment
    num_targets: int
    num_sources: int

    @property
    def padded(self) -> bool:
        """Whether some group gathers its rows (padding, or segments not back to back); tensors then get a zero row."""
        return any(group.span is None for group in self.groups)

    @property
    def covering(self) -> bool:
        """Whether one group of back-to-back segments covers every target and source (the batch's own layout)."""
        group = self.groups[0]
        return (len(self.groups) == 1 and group.span == (0, 0) and group.targets.numel() == self.num_targets
                and group.sources.numel() == self.num_sources)

    def nbytes(self) -> int:
        """Bytes of the plan's tensors (nodes, per-edge slots, masks)."""
        tensors = [t for g in self.groups for t in (g.targets, g.sources, g.edge_ids, g.edge_slots, g.mask)
                   if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)


def find_segments(graph: PreparedGraph) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The segments of ``graph``: (segment of every edge, first target, targets, first source, sources) per segment.

    A target without edges between segments is a segment of its own with no sources.
    """
    source, target = graph.edge_index[0], graph.edge_index[1]
    num_targets, num_sources = graph.num_targets, graph.num_sources
    lo = torch.full((num_targets,), num_sources, dtype=torch.long, device=source.device)
    lo = lo.scatter_reduce(0, target, source, "amin")  # (T,) smallest source; S where none
    hi = torch.full_like(lo, -1).scatter_reduce(0, target, source, "amax")  # (T,) largest; -1 where none
    before = hi.cummax(0).values  # (T,) largest source of targets <= t
    after = lo.flip(0).cummin(0).values.flip(0)  # (T,) smallest source of targets >= t
    start = torch.ones_like(lo, dtype=torch.bool)
    start[1:] = after[1:] > before[:-1]
    segment = start.cumsum(0) - 1  # (T,) segment of every target
    count = int(segment[-1]) + 1
    first = start.nonzero().squeeze(1)  # (count,)
    lengths = torch.diff(first, append=first.new_tensor([num_targets]))
    source_lo = torch.full((count,), num_sources, dtype=torch.long, device=lo.device).scatter_reduce(
        0, segment, lo, "amin")
    source_hi = torch.full((count,), -1, dtype=torch.long, device=lo.device).scatter_reduce(0, segment, hi, "amax")
    widths = (source_hi - source_lo + 1).clamp_min(0)
    return segment[target], first, lengths, source_lo.clamp_max(num_sources), widths


def _padded(sizes: Tensor, granule: int) -> Tensor:
    return -(-sizes // granule) * granule


def _group(graph: PreparedGraph, segments, members: Tensor, r: int, w: int, every_edge: bool) -> SegmentGroup:
    """The group of segments ``members`` padded to ``r x w``: nodes, mask, edge slots, span, causality."""
    edge_segment, first, lengths, source_first, widths = segments
    source, target = graph.edge_index[0], graph.edge_index[1]
    device = source.device
    position = torch.full_like(lengths, -1)
    position[members] = torch.arange(members.numel(), device=device)
    local_rows, local_cols = torch.arange(r, device=device), torch.arange(w, device=device)
    targets = first[members, None] + local_rows  # (N_s, R)
    targets = targets.masked_fill(local_rows >= lengths[members, None], graph.num_targets)
    sources = source_first[members, None] + local_cols  # (N_s, W)
    sources = sources.masked_fill(local_cols >= widths[members, None], graph.num_sources)
    if every_edge:
        edge_ids, segment, group_target, group_source = (
            torch.arange(edge_segment.numel(), device=device), edge_segment, target, source)
    else:
        edge_ids = (position[edge_segment] >= 0).nonzero().squeeze(1)  # (E_g,) the group's edges
        segment, group_target, group_source = edge_segment[edge_ids], target[edge_ids], source[edge_ids]
    row, col = group_target - first[segment], group_source - source_first[segment]  # (E_g,) inside the segment
    edge_slots = (position[segment] * r + row) * w + col  # (E_g,) in the flattened (N_s, R, W)
    mask = None
    if edge_slots.numel() != members.numel() * r * w:
        mask = torch.ones(members.numel() * r * w, dtype=torch.bool, device=device)
        mask[edge_slots] = False
        mask = mask.view(-1, 1, r, w)
    size = lengths[members]
    # causal: every segment square with exactly the pairs j <= i (edges are distinct, so counting suffices)
    causal = (r == w and bool((widths[members] == size).all()) and bool((col <= row).all())
              and edge_slots.numel() == int((size * (size + 1) // 2).sum()))
    steps = torch.arange(members.numel(), device=device)
    back_to_back = (bool((size == r).all()) and bool((widths[members] == w).all())
                    and bool((first[members] == first[members[0]] + r * steps).all())
                    and bool((source_first[members] == source_first[members[0]] + w * steps).all()))
    span = (int(first[members[0]]), int(source_first[members[0]])) if back_to_back else None
    return SegmentGroup(r, w, targets, sources, mask, edge_ids, edge_slots, span, causal)


def plan_segments(graph: PreparedGraph, num_heads: int) -> SegmentPlan | None:
    """Group the segments of ``graph`` by padded size (host work, once per graph); ``None`` when a
    segment is longer than :data:`MAX_SEGMENT` or no padding keeps to :data:`MAX_GROUPS` sizes and
    :data:`MAX_WASTE` entries per edge."""
    edge_segment, first, lengths, source_first, widths = find_segments(graph)
    used = widths > 0  # segments with edges
    longest = int(torch.maximum(lengths[used], widths[used]).max())
    if longest > MAX_SEGMENT:
        return None
    best = None
    for granule in GRANULES:  # the padding of least cost: entries + GROUP_COST per group
        rows, cols = _padded(lengths, granule), _padded(widths, granule)
        shape_key = rows * (MAX_SEGMENT + 1) + cols  # (count,)
        shapes = torch.unique(shape_key[used])
        entries = int((rows * cols)[used].sum())
        cost = entries + GROUP_COST * shapes.numel()
        if (shapes.numel() <= MAX_GROUPS and entries <= MAX_WASTE * graph.num_edges
                and (best is None or cost < best[0])):
            best = (cost, shape_key, shapes)
    if best is None:
        return None
    _, shape_key, shapes = best
    segments = (edge_segment, first, lengths, source_first, widths)
    chunks = []
    for key in shapes.tolist():  # host: once per graph
        r, w = divmod(key, MAX_SEGMENT + 1)
        members = (used & (shape_key == key)).nonzero().squeeze(1)  # (N_s,) segments of this size
        per_chunk = max(1, MAX_ELEMENTS // (num_heads * r * w))  # the tile math's scores stay bounded
        chunks += [(chunk, r, w) for chunk in members.split(per_chunk)]
    groups = tuple(_group(graph, segments, chunk, r, w, every_edge=len(chunks) == 1) for chunk, r, w in chunks)
    entries = sum(g.targets.numel() * g.cols for g in groups)
    return SegmentPlan(groups, entries, longest, graph.num_targets, graph.num_sources)


def segment_plan(graph: PreparedGraph, num_heads: int, head_dim: int) -> SegmentPlan | None:
    """The segments of ``graph`` (planned once, kept on the graph), or ``None``: use tiles or chunks.

    ``None`` when an edge repeats, a segment is longer than :data:`MAX_SEGMENT` or the padded
    segments compute more than :data:`MAX_WASTE` entries per edge.
    """
    def build():
        if graph.num_edges == 0 or graph.has_duplicates:
            return None
        plan = plan_segments(graph, num_heads)
        return None if plan is None or plan.entries > MAX_WASTE * graph.num_edges else plan
    return graph.derived(("segments", num_heads, MAX_WASTE, MAX_SEGMENT), build)
