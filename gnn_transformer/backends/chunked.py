r"""The ``"chunked"`` backend: exact graph attention over chunks of target nodes (CPU and any device).

A graph is computed the first way that fits it: a batch of sequences on one tile per
sequence (:mod:`.segment_plan`, :mod:`.segments`), else on the ``b x b`` tiles that hold edges
(:mod:`.tile_plan`, :mod:`.tiled`), else chunk by chunk as below (random graphs, hubs, repeated edges).

The edges are sorted by target (:attr:`PreparedGraph.csr`), so the edges into a run of
consecutive targets ``t0 .. t1 - 1`` are one contiguous range of sorted positions and their
sources lie in a range ``s0 .. s1 - 1``.  Each chunk is computed one of two ways:

* **dense** where the chunk's edges fill at least a quarter of its ``(t1 - t0) x (s1 - s0)``
  block (complete, causal, window and block-diagonal graphs): one batched matrix product
  :math:`Q_c K_r^\top` per chunk, the pairs that are not edges set to :math:`-\infty`;
* **gather** otherwise (random graphs, hubs): per-edge scores :math:`\langle q_i, k_j \rangle`
  and segment reductions inside the chunk.

Per chunk the forward computes the log-sum-exp :math:`L_i = \log \sum_{j \to i} e^{s_{ij}}`
(``+inf`` for a target without edges: zero output), :math:`p_{ij} = e^{s_{ij} - L_i}` and
:math:`o_i = \sum_j p_{ij} v_j`; only ``out`` and ``L`` (T, H) are kept.  The backward
recomputes each chunk (:math:`ds_{ij} = p_{ij}(do_i \cdot v_j - do_i \cdot o_i)`), so
per-edge, per-feature tensors exist for one chunk at a time, never for the whole graph.
Attention weights, when asked for, come from a second, non-differentiable pass.

Dropout keeps the pair ``j -> i`` for head ``h`` when a counter-based hash of (call seed,
``i``, ``j``, ``h``) clears the dropout probability (:func:`dropout_keep`): forward,
backward and weights recompute the same mask from the seed, whatever the chunk, and the
seed is a device tensor drawn from torch's generator, so no value is read back to the
host.  (Repeated copies of one edge share their draw.)

The chunk plan is made from the CSR on the host once per graph and head configuration
and kept on the graph (:func:`chunk_plan`); a graph prepared with
``prepare_graph(..., backend="chunked", num_heads=H, head_dim=C)`` has it already, so a
forward and backward on it make no host synchronisation and, under ``torch.compile``, no
graph break (every chunk bound is a Python int).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
from torch import Tensor

from .dropout import dropout_keep
from .prepared import PreparedGraph, preparation
from .segment_plan import segment_plan
from .segments import segmented_graph_attention
from .tile_plan import tile_plan
from .tiled import tiled_graph_attention

__all__ = ["chunked_graph_attention", "Chunk", "plan_chunks", "chunk_plan", "prepare_chunked", "dropout_keep"]

MAX_ELEMENTS = 2**22  # per-chunk budget of (edges or pairs) x heads x features


@dataclass(frozen=True)
class Chunk:
    """Targets ``t0:t1``, sorted edge positions ``e0:e1``, sources ``s0:s1``; ``dense`` or gather."""

    index: int
    t0: int
    t1: int
    e0: int
    e1: int
    s0: int
    s1: int
    dense: bool


def _source_bounds(csr, num_targets: int) -> tuple[list[int], list[int]]:
    """Smallest and largest source of each target (sources are sorted within a target)."""
    ptr, col = csr.ptr, csr.col.long()
    if col.numel() == 0:
        return [0] * num_targets, [-1] * num_targets
    has = ptr[1:] > ptr[:-1]
    low = torch.where(has, col[ptr[:-1].clamp(max=col.numel() - 1)], torch.iinfo(torch.int64).max)
    high = torch.where(has, col[(ptr[1:] - 1).clamp(min=0)], -1)
    return low.tolist(), high.tolist()


def plan_chunks(graph: PreparedGraph, num_heads: int, head_dim: int,
                max_elements: int | None = None) -> list[Chunk]:
    """Cut the targets into chunks; see the module docstring.

    Chunks start as runs of targets with about ``max_elements / num_heads`` edges; a chunk
    whose block is less than a quarter full is halved while the halves' blocks cover at
    most 3/4 of its block (block-diagonal graphs), and is otherwise gathered in pieces of
    ``max_elements / (num_heads * head_dim)`` edges.  ``max_elements`` defaults to
    :data:`MAX_ELEMENTS`; a graph with repeated edges is gathered throughout (a dense
    block holds each pair once).
    """
    max_elements = MAX_ELEMENTS if max_elements is None else max_elements
    csr = graph.csr
    ptr = csr.ptr.tolist()  # the plan is made on the host, once: bisect on this list, never on the device
    low, high = _source_bounds(csr, graph.num_targets)
    dense_edges = max(1, max_elements // num_heads)
    gather_edges = max(1, max_elements // (num_heads * head_dim))

    def block(t0, t1):
        """(area, s0, s1): the source range of targets t0:t1 and the size of their dense block."""
        s0, s1 = min(low[t0:t1], default=0), max(high[t0:t1], default=-1) + 1
        return (t1 - t0) * max(s1 - s0, 0), max(s0, 0), max(s1, 0)

    def split(t0, t1, max_edges):
        """Runs of targets with at most ``max_edges`` edges (or one target)."""
        starts, start = [], t0
        while start < t1:
            end = max(start + 1, bisect.bisect_right(ptr, ptr[start] + max_edges) - 1)
            starts.append((start, min(end, t1)))
            start = min(end, t1)
        return starts

    chunks, pending = [], split(0, graph.num_targets, dense_edges)[::-1]
    while pending:
        t0, t1 = pending.pop()
        area, s0, s1 = block(t0, t1)
        if 4 * (ptr[t1] - ptr[t0]) >= area and not csr.has_duplicates:
            chunks.append((t0, t1, s0, s1, True))
            continue
        middle = bisect.bisect_right(ptr, (ptr[t0] + ptr[t1]) // 2) - 1
        middle = min(max(middle, t0 + 1), t1 - 1)
        if t1 - t0 > 1 and not csr.has_duplicates and block(t0, middle)[0] + block(middle, t1)[0] <= 0.75 * area:
            pending += [(middle, t1), (t0, middle)]  # halving shrinks the blocks: block-diagonal structure
            continue
        chunks += [(a, b, *block(a, b)[1:], False) for a, b in split(t0, t1, gather_edges)]
    return [Chunk(i, t0, t1, ptr[t0], ptr[t1], s0, s1, dense) for i, (t0, t1, s0, s1, dense) in enumerate(chunks)]


class _ChunkMath:
    """Scores, probabilities and their gradients of one chunk (dense or gather)."""

    def __init__(self, chunk: Chunk, graph: PreparedGraph, q, k, bias, scale, dropout_p, seed, work):
        csr = graph.csr
        self.chunk, self.scale, self.work = chunk, scale, work
        c = chunk
        self.rows = torch.repeat_interleave(torch.arange(c.t1 - c.t0, device=q.device),
                                            csr.ptr[c.t0 + 1:c.t1 + 1] - csr.ptr[c.t0:c.t1],
                                            output_size=c.e1 - c.e0)  # (Ec,) local targets; sized: no sync
        self.cols = csr.col[c.e0:c.e1]  # (Ec,) sources
        self.edge_ids = csr.perm[c.e0:c.e1] if csr.perm is not None else torch.arange(c.e0, c.e1, device=q.device)
        self.q = q[c.t0:c.t1].to(work)  # (Tc, H, C)
        self.k = (k[c.s0:c.s1] if c.dense else k[self.cols]).to(work)  # (Sr, H, C) or (Ec, H, C)
        self.bias = None if bias is None else bias[self.edge_ids].to(work)  # (Ec, H or 1)
        self.dropout_p, self.seed, self.num_sources = dropout_p, seed, graph.num_sources
        self.num_keys = graph.num_targets * graph.num_sources * q.size(1)  # dropout keys (target, source, head)

    def scores(self) -> Tensor:
        """Dense: (H, Tc, Sr) with -inf off the edges; gather: (Ec, H)."""
        c = self.chunk
        if c.dense:
            s = torch.matmul(self.q.transpose(0, 1), self.k.permute(1, 2, 0)) * self.scale  # (H, Tc, Sr)
            if self.bias is None and c.e1 - c.e0 == s.size(1) * s.size(2):
                return s  # every pair is an edge: nothing to mask
            heads = 1 if self.bias is None else self.bias.size(1)
            add = s.new_full((heads, s.size(1) * s.size(2)), float("-inf"))
            flat = self.rows * s.size(2) + (self.cols - c.s0)
            add[:, flat] = 0.0 if self.bias is None else self.bias.t()
            return s + add.view(heads, s.size(1), s.size(2))
        s = (self.q[self.rows] * self.k).sum(-1) * self.scale  # (Ec, H)
        return s if self.bias is None else s + self.bias

    def log_sum_exp(self, s: Tensor) -> Tensor:
        """(Tc, H) log-sum-exp over each target's edges; +inf where a target has none."""
        if self.chunk.dense:
            lse = torch.logsumexp(s, dim=-1).t()  # (Tc, H)
        else:
            num_targets = self.chunk.t1 - self.chunk.t0
            index = self.rows[:, None].expand_as(s)
            peak = s.new_full((num_targets, s.size(1)), float("-inf")).scatter_reduce_(0, index, s, "amax")
            peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
            total = s.new_zeros(num_targets, s.size(1)).index_add_(0, self.rows, (s - peak[self.rows]).exp())
            lse = peak + total.log()
        return torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float("inf")))

    def probabilities(self, s: Tensor, lse: Tensor) -> tuple[Tensor, Tensor | None]:
        """Softmax weights ``p`` and the dropout mask scaled by 1 / (1 - dropout_p) (``None``: no dropout).

        The mask is a function of (seed, target, source, head) (:func:`dropout_keep`): the same in every pass.
        """
        p = (s - lse.t()[..., None]).exp() if self.chunk.dense else (s - lse[self.rows]).exp()
        if self.dropout_p == 0.0:
            return p, None
        c, num_heads = self.chunk, p.size(0 if self.chunk.dense else 1)
        heads, full = torch.arange(num_heads, device=p.device), c.dense and c.e1 - c.e0 == p.size(1) * p.size(2)
        if full:  # every pair of the block is an edge: draw over the block, (H, Tc, Sr)
            pair = (torch.arange(c.t0, c.t1, device=p.device)[:, None] * self.num_sources
                    + torch.arange(c.s0, c.s1, device=p.device)[None, :])  # (Tc, Sr)
            keep = dropout_keep(self.seed, pair * num_heads + heads[:, None, None], self.dropout_p, self.num_keys)
        else:  # draw at the edges only, (Ec, H)
            pair = (c.t0 + self.rows) * self.num_sources + self.cols  # (Ec,)
            keep = dropout_keep(self.seed, pair[:, None] * num_heads + heads, self.dropout_p, self.num_keys)
            if c.dense:  # into the block; pairs that are not edges have p = 0 anyway
                block = keep.new_zeros(num_heads, p.size(1) * p.size(2))
                block[:, self.rows * p.size(2) + (self.cols - c.s0)] = keep.t()
                keep = block.view_as(p)
        return p, keep.to(p.dtype) / (1.0 - self.dropout_p)

    def on_edges(self, dense: Tensor) -> Tensor:
        """(Ec, H) values of a dense (H, Tc, Sr) tensor at the chunk's edges."""
        return dense[:, self.rows, self.cols - self.chunk.s0].t()


def chunk_plan(graph: PreparedGraph, num_heads: int, head_dim: int) -> list[Chunk]:
    """The chunks of ``graph`` for this many heads and this head size (planned once, kept on the graph)."""
    return graph.derived(("chunks", num_heads, head_dim), lambda: plan_chunks(graph, num_heads, head_dim))


@preparation("chunked")
def prepare_chunked(graph: PreparedGraph, num_heads: int | None = None, head_dim: int | None = None) -> None:
    """What the chunked backend needs on ``graph``: the CSR, and the chunk plan for ``num_heads`` x ``head_dim``.

    ``head_dim`` is the larger of the key and value head sizes, as :func:`chunked_graph_attention` plans.
    """
    graph.csr  # noqa: B018 -- built and kept on the graph
    if num_heads is not None:
        if segment_plan(graph, num_heads, head_dim) is None and tile_plan(graph, num_heads, head_dim) is None:
            chunk_plan(graph, num_heads, head_dim)


def _plan(graph: PreparedGraph, q: Tensor, v: Tensor) -> list[Chunk]:
    return chunk_plan(graph, q.size(1), max(q.size(2), v.size(2)))


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _forward(q, k, v, bias, graph, scale, dropout_p, seed):
    work = _work_dtype(q.dtype)
    out = q.new_zeros(q.size(0), q.size(1), v.size(2), dtype=work)  # (T, H, Cv)
    lse = q.new_full(q.shape[:2], float("inf"), dtype=work)  # (T, H)
    for chunk in _plan(graph, q, v):
        math_ = _ChunkMath(chunk, graph, q, k, bias, scale, dropout_p, seed, work)
        s = math_.scores()
        lse[chunk.t0:chunk.t1] = chunk_lse = math_.log_sum_exp(s)
        p, keep = math_.probabilities(s, chunk_lse)
        used = p if keep is None else p * keep
        if chunk.dense:
            out[chunk.t0:chunk.t1] = torch.matmul(used, v[chunk.s0:chunk.s1].to(work).transpose(0, 1)).transpose(0, 1)
        else:
            out[chunk.t0:chunk.t1].index_add_(0, math_.rows, used[..., None] * v[math_.cols].to(work))
    return out.to(q.dtype), lse


def _backward(q, k, v, bias, out, lse, grad_out, graph, scale, dropout_p, seed, bias_grad):
    work = _work_dtype(q.dtype)
    delta = (grad_out.to(work) * out.to(work)).sum(-1)  # (T, H)
    dq, dk, dv = (torch.zeros_like(t, dtype=work) for t in (q, k, v))
    dbias = torch.zeros(bias.size(0), q.size(1), dtype=work, device=q.device) if bias_grad else None
    for chunk in _plan(graph, q, v):
        c = chunk
        math_ = _ChunkMath(chunk, graph, q, k, bias, scale, dropout_p, seed, work)
        p, keep = math_.probabilities(math_.scores(), lse[c.t0:c.t1])
        used = p if keep is None else p * keep
        do = grad_out[c.t0:c.t1].to(work)  # (Tc, H, Cv)
        if c.dense:
            values = v[c.s0:c.s1].to(work).transpose(0, 1)  # (H, Sr, Cv)
            dp = torch.matmul(do.transpose(0, 1), values.transpose(1, 2))  # (H, Tc, Sr)
            dv[c.s0:c.s1] += torch.matmul(used.transpose(1, 2), do.transpose(0, 1)).transpose(0, 1)
            ds = p * ((dp if keep is None else dp * keep) - delta[c.t0:c.t1].t()[..., None])  # (H, Tc, Sr)
            dq[c.t0:c.t1] = torch.matmul(ds, math_.k.transpose(0, 1)).transpose(0, 1) * scale
            dk[c.s0:c.s1] += torch.matmul(ds.transpose(1, 2), math_.q.transpose(0, 1)).transpose(0, 1) * scale
            edge_ds = math_.on_edges(ds) if dbias is not None else None
        else:
            values = v[math_.cols].to(work)  # (Ec, H, Cv)
            dp = (do[math_.rows] * values).sum(-1)  # (Ec, H)
            dv.index_add_(0, math_.cols, used[..., None] * do[math_.rows])
            edge_ds = p * ((dp if keep is None else dp * keep) - delta[c.t0:c.t1][math_.rows])  # (Ec, H)
            dq[c.t0:c.t1].index_add_(0, math_.rows, edge_ds[..., None] * math_.k * scale)
            dk.index_add_(0, math_.cols, edge_ds[..., None] * math_.q[math_.rows] * scale)
        if dbias is not None:
            dbias[math_.edge_ids] = edge_ds
    if dbias is not None:
        dbias = (dbias if bias.size(1) > 1 else dbias.sum(1, keepdim=True)).to(bias.dtype)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias


class _ChunkedGraphAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, graph: PreparedGraph, scale: float, dropout_p: float, seed: Tensor | None):
        out, lse = _forward(q, k, v, bias, graph, scale, dropout_p, seed)
        ctx.save_for_backward(q, k, v, bias, out, lse, seed)
        ctx.graph, ctx.scale, ctx.dropout_p = graph, scale, dropout_p
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        q, k, v, bias, out, lse, seed = ctx.saved_tensors
        grads = _backward(q, k, v, bias, out, lse, grad_out, ctx.graph, ctx.scale, ctx.dropout_p, seed,
                          bias_grad=bias is not None and ctx.needs_input_grad[3])
        return (*grads, None, None, None, None)


@torch.no_grad()
def _weights(q, k, bias, lse, graph, scale, dropout_p, seed, like_v) -> Tensor:
    weights = q.new_zeros(graph.num_edges, q.size(1))  # (num_edges, H)
    for chunk in _plan(graph, q, like_v):
        math_ = _ChunkMath(chunk, graph, q, k, bias, scale, dropout_p, seed, _work_dtype(q.dtype))
        p, keep = math_.probabilities(math_.scores(), lse[chunk.t0:chunk.t1])
        used = p if keep is None else p * keep
        weights[math_.edge_ids] = (math_.on_edges(used) if chunk.dense else used).to(q.dtype)
    return weights


def chunked_graph_attention(q: Tensor, k: Tensor, v: Tensor, graph: PreparedGraph, edge_bias: Tensor | None,
                            scale: float, dropout_p: float = 0.0,
                            need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """Graph attention chunk by chunk; returns (out (T, H, Cv), weights (num_edges, H) or ``None``).

    ``edge_bias`` is (num_edges, H) or (num_edges, 1) in the user's edge order; ``weights``
    are detached (a second pass from the saved log-sum-exp).  No host synchronisation when
    ``graph`` carries the chunk plan for these heads (:func:`prepare_chunked`); the dropout
    seed stays on the device.
    """
    seed = torch.randint(0, 2**32, (2,), device=q.device) if dropout_p > 0.0 else None  # (2,) words of the hash
    segments = segment_plan(graph, q.size(1), max(q.size(2), v.size(2)))
    if segments is not None:
        return segmented_graph_attention(q, k, v, graph, segments, edge_bias, scale, dropout_p, seed, need_weights)
    tiles = tile_plan(graph, q.size(1), max(q.size(2), v.size(2)))
    if tiles is not None:
        return tiled_graph_attention(q, k, v, graph, tiles, edge_bias, scale, dropout_p, seed, need_weights)
    out, lse = _ChunkedGraphAttention.apply(q, k, v, edge_bias, graph, scale, dropout_p, seed)
    weights = None
    if need_weights:
        weights = _weights(q.detach(), k.detach(), None if edge_bias is None else edge_bias.detach(), lse, graph,
                           scale, dropout_p, seed, v)
    return out, weights

