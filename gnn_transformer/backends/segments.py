r"""Segments of the chunked backend: attention on one tile per sequence of a batch.

A graph whose edges stay inside disjoint runs of consecutive nodes (:mod:`.segment_plan`: a batch
of sequences, any pattern inside each) is computed one tile per segment, aligned to its
sequence instead of to a global grid, segments of one padded size together, so a ragged batch of
32 sequences of 10 to 50 tokens takes a handful of calls over about 1.2 entries per edge, where
fixed 32 x 32 tiles compute 2.6 and a padded dense batch 2.4.

Without bias and dropout, and with one head size, each group runs on torch's fused CPU attention
kernel (``_scaled_dot_product_flash_attention_for_cpu`` and its backward): the graph's mask as an
additive mask, or the kernel's own causal mask when every segment is exactly causal; a group of
back-to-back unpadded segments is read in place, and a batch of equal sequences is the kernel's
own layout (no gather, no copy).  Otherwise the math is the tile path's (:mod:`.tiled`): scores of
the gathered queries and keys, the masked softmax, ``out`` and the log-sum-exp kept, the backward
recomputing the probabilities; a segment is a tile alone in its rows, so there is no merge, and
its sources belong to no other segment.  Biases, dropout (the same hash and keys as the other
paths) and attention weights are served.

Shapes: T targets, S sources, H heads, C head size (Cv for values), N_s segments of a group,
R x W their padded rows and columns.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .prepared import PreparedGraph
from .segment_plan import SegmentGroup, SegmentPlan
from .tiled import _Tiles, _flat, _to, _work_dtype

__all__ = ["segmented_graph_attention", "uses_fused_kernel", "KERNEL_AVAILABLE"]

_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
# the kernel with an attention mask (recent torch); older builds keep the tile math
KERNEL_AVAILABLE = _FLASH is not None and "attn_mask" in str(_FLASH.default._schema)


def uses_fused_kernel(q: Tensor, v: Tensor, bias: Tensor | None, dropout_p: float) -> bool:
    """Whether the groups run on torch's fused CPU attention kernel: on CPU, without bias or dropout
    (the kernel has no gradient for a bias and draws its own dropout) and with one head size."""
    return (KERNEL_AVAILABLE and q.device.type == "cpu" and bias is None and dropout_p == 0.0
            and q.size(2) == v.size(2))


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
