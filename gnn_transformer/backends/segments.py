r"""Segments of the chunked backend: graphs whose edges stay inside disjoint runs of consecutive nodes.

A batch of sequences is such a graph: the complete, causal or any other graph of each sequence,
self-attention or cross-attention, never an edge from one sequence to another.  Segment ``i``
is a run of targets ``[t_i, t_i + m_i)`` whose edges all come from a run of sources
``[s_i, s_i + n_i)`` that no other segment's targets read.  Each segment becomes one tile of its
own size, aligned to its sequence instead of to a global grid, unpadded or padded to a multiple
of 8, 16, ... rows and columns (:data:`GRANULES`: the least entries plus :data:`GROUP_COST` per
padded size); segments of one padded size are computed together, so a
ragged batch of 32 sequences of 10 to 50 tokens takes a handful of batched products over
about 1.2 entries per edge, where fixed 32 x 32 tiles compute 2.6 and a padded dense batch 2.4.

Found from the edges alone (no lengths are passed): with :math:`lo_t, hi_t` the smallest and
largest source of target :math:`t`, a segment starts at target :math:`t` exactly when

.. math:: \min_{t' \ge t} lo_{t'} \;>\; \max_{t' < t} hi_{t'},

every later target reads only sources after every earlier one.  Per segment the math is the
tile path's (:mod:`.tiled`): scores of the gathered queries and keys, the masked softmax
(pairs that are not edges and padding masked), ``out`` and the log-sum-exp kept, the backward
recomputing the probabilities; a segment is a tile that is alone in its rows, so there is no
merge, and its sources belong to no other segment.  Biases, dropout (the same hash and keys as
the other paths) and attention weights are served.

Shapes: T targets, S sources, H heads, C head size (Cv for values), N_s segments of a group,
R x W their padded rows and columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .prepared import PreparedGraph
from .tiled import MAX_ELEMENTS, MAX_WASTE, _Tiles, _flat, _to, _work_dtype

__all__ = ["SegmentPlan", "SegmentGroup", "find_segments", "segment_plan", "segmented_graph_attention", "GRANULES",
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


_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_FLASH_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def uses_fused_kernel(q: Tensor, v: Tensor, bias: Tensor | None, dropout_p: float) -> bool:
    """Whether the groups run on torch's fused CPU attention kernel: on CPU, without bias or dropout
    (the kernel has no gradient for a bias and draws its own dropout) and with one head size."""
    return q.device.type == "cpu" and bias is None and dropout_p == 0.0 and q.size(2) == v.size(2)


def _padded_rows(x: Tensor) -> Tensor:
    """(N, H, C) -> (N + 1, H, C): row N is the zero row that padding gathers."""
    return F.pad(x, (0, 0, 0, 0, 0, 1))


def _gather(padded: Tensor, group: SegmentGroup, side: str) -> Tensor:
    """The group's rows of ``padded`` as a contiguous (N_s, H, R or W, C) (for batched products)."""
    return group.rows_of(padded, side).contiguous()


def _kernel_mask(group: SegmentGroup, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
    """The kernel's additive mask (N_s, 1, R, W): 0 on edges, ``-inf`` elsewhere; and the rows
    without an edge (N_s, 1, R), whose log-sum-exp the kernel reports as 0.  ``None``: all pairs."""
    key = ("kernel", dtype)
    if key not in group.cache:
        if group.mask is None or group.causal:  # causal: the kernel masks; padding rows are dropped
            group.cache[key] = (None, None)
        else:
            additive = torch.zeros(group.mask.shape, dtype=dtype, device=group.mask.device)
            group.cache[key] = (additive.masked_fill_(group.mask, float("-inf")), group.mask.all(-1))
    return group.cache[key]


class _SegmentTiles(_Tiles):
    """The tile math on a group of segments: queries and keys gathered per segment, no merge.

    ``q``, ``k`` and the ``v`` of :meth:`values` hold a zero row at the end when the plan is padded.
    """

    def __init__(self, group: SegmentGroup, graph: PreparedGraph, q, k, bias, dropout_p, seed):
        self.group, self.graph = group, graph
        self.q, self.k = _gather(q, group, "targets"), _gather(k, group, "sources")  # (N_s, H, R | W, C), q scaled
        self.bias, self.dropout_p, self.seed = bias, dropout_p, seed
        self.may_be_empty = bias is not None or group.mask is not None  # padding rows have no edge
        self.shape = (group.targets.size(0), group.rows, group.cols)
        self._bias_tiles = None

    def per_tile(self, x: Tensor) -> Tensor:
        return x

    def merge(self, per_tile: Tensor) -> Tensor:
        return per_tile

    def values(self, v: Tensor) -> Tensor:
        return _gather(v, self.group, "sources")  # (N_s, H, W, Cv)

    def nodes(self) -> tuple[Tensor, Tensor]:
        graph = self.graph
        return (self.group.targets.clamp(max=graph.num_targets - 1),
                self.group.sources.clamp(max=graph.num_sources - 1))


def _group_forward(group, graph, q, k, v, bias, dropout_p, seed, fused):
    """Output (N_s, H, R, Cv) and log-sum-exp (N_s, H, R), ``+inf`` on rows without edges (q carries the scale)."""
    if fused:
        mask, empty = _kernel_mask(group, q.dtype)
        out, lse = _FLASH(group.rows_of(q, "targets"), group.rows_of(k, "sources"), group.rows_of(v, "sources"),
                          0.0, group.causal, attn_mask=mask, scale=1.0)
        return out, lse if empty is None else lse.masked_fill(empty, float("inf"))
    tiles = _SegmentTiles(group, graph, q, k, bias, dropout_p, seed)
    p, lse = tiles.softmax(tiles.scores())  # (N_s, H, R, W), (N_s, H, R)
    keep = tiles.keep(q.size(1))
    if keep is not None:
        p = p * keep
    values = tiles.values(v)
    return torch.bmm(_flat(p), _flat(values)).view(*p.shape[:3], values.size(3)), lse


def _forward(plan: SegmentPlan, q, k, v, bias, graph, dropout_p, seed, fused):
    """Output and log-sum-exp (``+inf`` for targets without edges) as stored: see :func:`_per_node`
    (q carries the scale)."""
    if fused and plan.covering:  # the kernel's output is laid out as the nodes are: no copy
        return _group_forward(plan.groups[0], graph, q, k, v, bias, dropout_p, seed, fused)
    extra = int(plan.padded)
    if extra:
        q, k, v = _padded_rows(q), _padded_rows(k), _padded_rows(v)
    out = q.new_zeros(graph.num_targets + extra, q.size(1), v.size(2))  # (T (+ 1), H, Cv)
    lse = q.new_full((graph.num_targets + extra, q.size(1), 1), float("inf"))  # (T (+ 1), H, 1)
    for group in plan.groups:
        group_out, group_lse = _group_forward(group, graph, q, k, v, bias, dropout_p, seed, fused)
        group.put(out, group_out, "targets")
        group.put(lse, group_lse[..., None], "targets")
    return out, lse


def _per_node(stored_out: Tensor, stored_lse: Tensor, num_targets: int) -> tuple[Tensor, Tensor]:
    """Views (T, H, Cv) and (T, H) of what :func:`_forward` stores: the kernel's (N_s, H, R, Cv) and
    (N_s, H, R) for a whole batch of equal sequences, else (T (+ 1), H, Cv) and (T (+ 1), H, 1).

    The stored tensors are what backward keeps; the outputs are copies of these views (an output
    may not alias a saved tensor under ``torch.compile``)."""
    if stored_out.dim() == 4:
        heads = stored_out.size(1)
        return (stored_out.transpose(1, 2).reshape(num_targets, heads, -1),
                stored_lse.transpose(1, 2).reshape(num_targets, heads))
    return stored_out[:num_targets], stored_lse[:num_targets, :, 0]


def _backward(plan: SegmentPlan, q, k, v, bias, out, lse, grad_out, graph, dropout_p, seed, bias_grad, fused):
    """dq (scaled as q), dk, dv (each (N, H, .)) and the bias gradient (num_edges, H) or ``None``."""
    num_heads = q.size(1)
    grad_out = _to(grad_out, q.dtype)
    if fused and plan.covering:
        group = plan.groups[0]
        mask, _ = _kernel_mask(group, q.dtype)
        lse_rows = lse.view(group.targets.shape[0], group.rows, num_heads).transpose(1, 2)
        grads = _FLASH_BACKWARD(*(group.rows_of(x, side) for x, side in (
            (grad_out, "targets"), (q, "targets"), (k, "sources"), (v, "sources"), (out, "targets"))),
            lse_rows, 0.0, group.causal, attn_mask=mask, scale=1.0)
        return (*(g.transpose(1, 2).reshape(x.shape) for g, x in zip(grads, (q, k, v))), None)
    extra = int(plan.padded)
    lse = lse[..., None]  # (T, H, 1)
    if extra:
        q, k, v, out, grad_out = (_padded_rows(x) for x in (q, k, v, out, grad_out))
        lse = F.pad(lse, (0, 0, 0, 0, 0, 1), value=float("inf"))
    dq, dk, dv = (torch.zeros_like(x) for x in (q, k, v))  # (N (+ 1), H, C) each
    dbias = torch.zeros(bias.size(0), num_heads, dtype=q.dtype, device=q.device) if bias_grad else None
    delta = None if fused else (grad_out * out).sum(-1, keepdim=True)  # (T (+ 1), H, 1)
    for g in plan.groups:
        group_lse = _gather(lse, g, "targets")[..., 0]  # (N_s, H, R)
        if fused:
            mask, _ = _kernel_mask(g, q.dtype)
            group_dq, group_dk, group_dv = _FLASH_BACKWARD(
                g.rows_of(grad_out, "targets"), g.rows_of(q, "targets"), g.rows_of(k, "sources"),
                g.rows_of(v, "sources"), g.rows_of(out, "targets"), group_lse, 0.0, g.causal, attn_mask=mask,
                scale=1.0)
        else:
            tiles = _SegmentTiles(g, graph, q, k, bias, dropout_p, seed)
            p = tiles.probabilities(tiles.scores(), group_lse)  # (N_s, H, R, W)
            keep = tiles.keep(num_heads)
            dot, values = _gather(grad_out, g, "targets"), tiles.values(v)  # (N_s, H, R | W, Cv)
            used = p if keep is None else p * keep
            group_dv = torch.bmm(_flat(used).transpose(1, 2), _flat(dot)).view_as(values)  # (N_s, H, W, Cv)
            dp = torch.bmm(_flat(dot), _flat(values).transpose(1, 2)).view_as(p)  # (N_s, H, R, W)
            if keep is not None:
                dp.mul_(keep)
            ds = p.mul_(dp.sub_(_gather(delta, g, "targets")))  # (N_s, H, R, W)
            group_dq = torch.bmm(_flat(ds), _flat(tiles.k)).view_as(tiles.q)
            group_dk = torch.bmm(_flat(ds).transpose(1, 2), _flat(tiles.q)).view_as(tiles.k)
            if dbias is not None:
                ids, values = tiles.slots(ds)
                dbias[ids] = values
        g.put(dq, group_dq, "targets", add=True)  # padding rows land on the zero row
        g.put(dk, group_dk, "sources", add=True)
        g.put(dv, group_dv, "sources", add=True)
    size = (graph.num_targets, graph.num_sources)
    return dq[:size[0]], dk[:size[1]], dv[:size[1]], dbias


class _SegmentedGraphAttention(torch.autograd.Function):
    """Saves q (scaled), k, v, the output and the log-sum-exp: nothing per pair or edge."""

    @staticmethod
    def forward(ctx, q, k, v, bias, graph, plan, scale, dropout_p, seed):
        work = _work_dtype(q.dtype)
        qs, ks, vs = _to(q, work) * scale, _to(k, work), _to(v, work)
        fused = uses_fused_kernel(qs, vs, bias, dropout_p)
        stored = _forward(plan, qs, ks, vs, bias, graph, dropout_p, seed, fused)
        ctx.save_for_backward(qs, ks, vs, bias, *stored, seed)
        ctx.graph, ctx.plan, ctx.scale, ctx.dropout_p, ctx.fused = graph, plan, scale, dropout_p, fused
        ctx.dtypes = (q.dtype, k.dtype, v.dtype)
        out, lse = _per_node(*stored, graph.num_targets)  # (T, H, Cv), (T, H)
        lse = lse.clone()
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)
        return out.to(q.dtype, copy=True), lse

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        qs, ks, vs, bias, stored_out, stored_lse, seed = ctx.saved_tensors
        if grad_out is None:
            return (None,) * 9
        out, lse = _per_node(stored_out, stored_lse, ctx.graph.num_targets)
        bias_grad = bias is not None and ctx.needs_input_grad[3]
        dq, dk, dv, dbias = _backward(ctx.plan, qs, ks, vs, bias, out, lse, grad_out, ctx.graph, ctx.dropout_p,
                                      seed, bias_grad, ctx.fused)
        q_dtype, k_dtype, v_dtype = ctx.dtypes
        if dbias is not None:
            dbias = _to(dbias if bias.size(1) > 1 else dbias.sum(1, keepdim=True), bias.dtype)
        return _to(dq * ctx.scale, q_dtype), _to(dk, k_dtype), _to(dv, v_dtype), dbias, None, None, None, None, None


@torch.no_grad()
def _weights(plan: SegmentPlan, q, k, bias, lse, graph, scale, dropout_p, seed) -> Tensor:
    work = _work_dtype(q.dtype)
    qs, ks = _to(q, work) * scale, _to(k, work)
    lse = lse[..., None]
    if plan.padded:
        qs, ks = _padded_rows(qs), _padded_rows(ks)
        lse = F.pad(lse, (0, 0, 0, 0, 0, 1), value=float("inf"))
    weights = q.new_zeros(graph.num_edges, q.size(1))  # (num_edges, H)
    for group in plan.groups:
        tiles = _SegmentTiles(group, graph, qs, ks, bias, dropout_p, seed)
        p = tiles.probabilities(tiles.scores(), _gather(lse, group, "targets")[..., 0])
        keep = tiles.keep(q.size(1))
        ids, values = tiles.slots(p if keep is None else p * keep)
        weights[ids] = values.to(q.dtype)
    return weights


def segmented_graph_attention(q: Tensor, k: Tensor, v: Tensor, graph: PreparedGraph, plan: SegmentPlan,
                              edge_bias: Tensor | None, scale: float, dropout_p: float, seed: Tensor | None,
                              need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """Graph attention over the segments of ``plan``; returns (out (T, H, Cv), weights (num_edges, H) or ``None``)."""
    out, lse = _SegmentedGraphAttention.apply(q, k, v, edge_bias, graph, plan, scale, dropout_p, seed)
    weights = None
    if need_weights:
        weights = _weights(plan, q.detach(), k.detach(), None if edge_bias is None else edge_bias.detach(), lse,
                           graph, scale, dropout_p, seed)
    return out, weights
