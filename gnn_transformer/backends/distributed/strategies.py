r"""Exact attention over a graph split across ranks: halo exchange, ring, head-parallel.

Rank r holds the queries of its targets and the keys and values of its sources
(:class:`~.plan.DistributedGraph`); it must compute, for each of its targets i,

.. math::
    o_i = \sum_{j \to i} \operatorname{softmax}_j\big(\text{scale}\, q_i \cdot k_j\big)\, v_j ,

where some sources j live on other ranks.  The three strategies move different things:

* **halo** -- receive exactly the key/value rows of the remote sources its edges reference
  (one ``all_to_all_single``, counts from the cut), attend locally with a local backend; the
  backward returns the gradients of those rows to their owners the same way.
* **ring** -- every rank's key/value block passes around the ring (P - 1 steps, the next
  block travelling while the current one is computed); each block gives a partial output and
  log-sum-exp, merged exactly:
  :math:`L = \log(e^{L_a} + e^{L_b})`, :math:`o = e^{L_a - L} o_a + e^{L_b - L} o_b`.
  Blocks without an edge into the rank's targets (causal graphs) are not computed.  The
  backward sends the key/value blocks around again and, one step behind them, each block's
  gradient accumulator (:math:`dS_{ij} = P_{ij}(dO_i \cdot v_j - dO_i \cdot o_i)` with the
  merged L and o); both travel while the next block is computed, and after P steps every
  accumulator has reached its block's owner.
* **head** (Ulysses) -- one all-to-all turns node shards into head shards: each rank gets
  every node for H / P heads, attends on the whole graph with a local backend, and an
  all-to-all turns the output back into node shards.

All three are exact; with one rank (or no process group) they are the local backend.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import check_backend, run_backend
from ..chunked import _backward as chunked_backward
from ..chunked import _forward as chunked_forward
from .comm import all_to_all, ring_shift
from .plan import STRATEGIES, DistributedGraph

__all__ = ["distributed_graph_attention"]


def _halo(q, k, v, graph: DistributedGraph, scale: float, backend: str) -> Tensor:
    plan = graph.halo
    kv = torch.cat([k, v], dim=-1)  # (S_r, H, C + Cv)
    received = all_to_all(kv[plan["send_index"]], plan["send_counts"], plan["receive_counts"], graph.group,
                          graph.traffic)  # (R, H, C + Cv), the halo
    kv = torch.cat([kv, received])  # (S_r + R, H, C + Cv)
    out, _ = run_backend(q, kv[..., :k.size(2)], kv[..., k.size(2):], plan["graph"], None, scale, 0.0, backend,
                         False)
    return out  # (T_r, H, Cv)


def _merge(out, lse, out_b, lse_b):
    """Merge two partial softmaxes; ``lse`` is -inf where nothing was seen yet."""
    total = torch.logaddexp(lse, lse_b)  # (T, H)
    safe = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
    return out * (lse - safe).exp()[..., None] + out_b * (lse_b - safe).exp()[..., None], total


class _Ring(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, graph: DistributedGraph, scale: float):
        P, r, c = graph.world_size, graph.rank, k.size(2)
        counts = graph.sources.counts.tolist()
        block = torch.cat([k, v], dim=-1).detach()  # (S_r, H, C + Cv), the block this rank holds
        out = q.new_zeros(q.size(0), q.size(1), v.size(2))  # (T_r, H, Cv)
        lse = q.new_full(q.shape[:2], float("-inf"))  # (T_r, H)
        for step in range(P):
            owner = (r - step) % P
            wait = None
            if step < P - 1:  # the next block travels while this one is computed
                shape = (counts[(owner - 1) % P], *block.shape[1:])
                _, wait = ring_shift(block, shape, graph.group, graph.traffic, "forward")
            edges = graph.ring_blocks[owner]
            if edges is not None:  # no edge into this rank's targets from this block: skipped
                out_b, lse_b = chunked_forward(q, block[..., :c], block[..., c:], None, edges, scale, 0.0, 0)
                lse_b = torch.where(torch.isinf(lse_b), torch.full_like(lse_b, float("-inf")), lse_b)
                out, lse = _merge(out, lse, out_b, lse_b)
            if wait is not None:
                block = wait()
        lse = torch.where(torch.isinf(lse), torch.full_like(lse, float("inf")), lse)  # chunked: +inf = no edge
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.graph, ctx.scale = graph, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        graph, scale = ctx.graph, ctx.scale
        P, r, c = graph.world_size, graph.rank, k.size(2)
        counts = graph.sources.counts.tolist()
        dq = torch.zeros_like(q)
        block = torch.cat([k, v], dim=-1)  # (S_r, H, C + Cv), the key/value block held
        wait_gradient = None
        for step in range(P):
            owner = (r - step) % P
            wait_block = None
            if step < P - 1:  # the next key/value block travels while this one is computed
                _, wait_block = ring_shift(block, (counts[(owner - 1) % P], *block.shape[1:]), graph.group,
                                           graph.traffic, "backward", tag=1)
            edges = graph.ring_blocks[owner]
            gradient = torch.zeros_like(block)  # this rank's share of the block's dk, dv
            if edges is not None:
                dq_b, dk_b, dv_b, _ = chunked_backward(q, block[..., :c], block[..., c:], None, out, lse, grad_out,
                                                       edges, scale, 0.0, 0, False)
                dq += dq_b
                gradient = torch.cat([dk_b, dv_b], dim=-1)  # (S_owner, H, C + Cv)
            if wait_gradient is not None:  # the block's accumulator from rank r - 1 (sent after its step)
                gradient = gradient + wait_gradient()
            # pass the accumulator on; it travels while the next block is computed.  After the last
            # step it reaches the block's owner, rank r + 1, and rank r receives its own.
            _, wait_gradient = ring_shift(gradient, (counts[(owner - 1) % P], *block.shape[1:]), graph.group,
                                          graph.traffic, "backward", tag=2)
            if wait_block is not None:
                block = wait_block()
        grads = wait_gradient()  # (S_r, H, C + Cv): every rank's share of this rank's dk, dv
        return dq, grads[..., :c], grads[..., c:], None, None


def _to_heads(x: Tensor, partition, heads: list[int], graph: DistributedGraph) -> Tensor:
    """Node shard (n_r, H, D) -> head shard (N, h_r, D), nodes rank-major."""
    r, d = graph.rank, x.size(2)
    pieces = torch.split(x, heads, dim=1)  # per destination: (n_r, h_s, D)
    send = torch.cat([p.reshape(-1, d) for p in pieces])  # (n_r * H, D)
    counts = partition.counts.tolist()
    received = all_to_all(send, [x.size(0) * h for h in heads], [n * heads[r] for n in counts], graph.group,
                          graph.traffic)  # (N * h_r, D)
    return received.reshape(partition.num_nodes, heads[r], d)  # rank-major rows: rank s's nodes, then s + 1's


def _to_nodes(y: Tensor, partition, heads: list[int], graph: DistributedGraph) -> Tensor:
    """Head shard (N, h_r, D), nodes rank-major -> node shard (n_r, H, D)."""
    r, d = graph.rank, y.size(2)
    counts = partition.counts.tolist()
    received = all_to_all(y.reshape(-1, d), [n * heads[r] for n in counts], [counts[r] * h for h in heads],
                          graph.group, graph.traffic)  # (n_r * H, D), by source rank
    pieces = torch.split(received, [counts[r] * h for h in heads])
    return torch.cat([p.reshape(counts[r], h, d) for p, h in zip(pieces, heads)], dim=1)  # (n_r, H, D)


def _head_parallel(q, k, v, graph: DistributedGraph, scale: float, backend: str) -> Tensor:
    heads = graph.head_split(q.size(1))
    q_all = _to_heads(q, graph.targets, heads, graph)  # (T, h_r, C)
    kv_all = _to_heads(torch.cat([k, v], dim=-1), graph.sources, heads, graph)  # (S, h_r, C + Cv)
    if heads[graph.rank] == 0:  # more ranks than heads: nothing to compute here, but the exchanges still run
        # an empty output tied to q_all and kv_all, so that their all-to-alls run backward on this rank too
        out = q_all.new_zeros(q_all.size(0), 0, v.size(2)) + q_all.sum() + kv_all.sum()  # (T, 0, Cv)
    else:
        out, _ = run_backend(q_all, kv_all[..., :k.size(2)], kv_all[..., k.size(2):], graph.head_graph, None, scale,
                             0.0, backend, False)  # (T, h_r, Cv)
    return _to_nodes(out, graph.targets, heads, graph)  # (T_r, H, Cv)


def distributed_graph_attention(q: Tensor, k: Tensor, v: Tensor, graph: DistributedGraph, scale: float | None = None,
                                strategy: str | None = None, backend: str = "chunked") -> Tensor:
    r"""Exact graph attention with the nodes split across the ranks of ``graph.group``.

    Every rank calls it with its share (in the same order on all ranks, as any collective).

    Args:
        q: (T_r, H, C) queries of this rank's targets (``graph.targets.nodes(rank)``).
        k: (S_r, H, C) keys of this rank's sources; v: (S_r, H, Cv) their values.
        graph: this rank's :class:`~.plan.DistributedGraph` (built once, reused by every layer).
        scale: score scale; default :math:`1 / \sqrt{C}`.
        strategy: ``"halo"``, ``"ring"`` or ``"head"`` (module docstring); all exact, on any graph;
            default ``graph.strategy``.
        backend: the local backend of ``"halo"`` and ``"head"`` (``"chunked"``, ``"reference"``,
            ``"fused"``, ``"auto"``); ``"ring"`` always uses the chunked forward and backward.

    Returns:
        (T_r, H, Cv) the attention output of this rank's targets, differentiable with respect
        to q, k and v; the gradients of remote keys and values reach their owners.  The bytes
        sent are added to ``graph.traffic``.  Edge biases, dropout and attention weights are not
        supported here.

    Shapes:
        T_r, S_r: this rank's targets and sources; H heads; C, Cv head sizes.
    """
    if not isinstance(graph, DistributedGraph):
        raise TypeError(f"graph must be a DistributedGraph (built once per graph on every rank), "
                        f"got {type(graph).__name__}")
    strategy = graph.strategy if strategy is None else strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    check_backend(backend)
    graph.check_features(q, k, v)
    scale = q.size(2) ** -0.5 if scale is None else float(scale)
    if graph.world_size == 1:  # one rank: the local backends on the whole graph
        return run_backend(q, k, v, graph.local_graph, None, scale, 0.0, backend, False)[0]
    if strategy == "halo":
        return _halo(q, k, v, graph, scale, backend)
    if strategy == "ring":
        return _Ring.apply(q, k, v, graph, scale)
    return _head_parallel(q, k, v, graph, scale, backend)
