r"""Tiles of the chunked backend: only the ``b x b`` tiles of the (target x source) plane that hold edges.

Cut the plane into square tiles of ``b`` targets by ``b`` sources; a tile is *full* when every
pair it covers is an edge, *partial* otherwise (its pairs that are not edges are masked with a
boolean mask unpacked once from the edges, the bitmask of the prepared tile layout in bytes),
and tiles without edges are never touched.  With ``Q_t`` (b, C) the queries of tile ``t``'s
row block, ``K_t, V_t`` (b, C) the keys and values of its column block and ``M_t`` its mask,
one call computes, for all tiles at once (batched matrix products over tiles and heads),

.. math::
    S_t = \frac{Q_t K_t^\top}{\sqrt{d_k}} + B_t \ (-\infty \text{ off the edges}), \qquad
    m_i = \max_{t \ni i} \max_j S_{t,ij}, \qquad
    L_i = m_i + \log \sum_{t \ni i} \sum_j e^{S_{t,ij} - m_i},

the log-sum-exp merge over the tiles of a row block (a scatter over tiles; skipped when every
row block has one tile), :math:`P_t = e^{S_t - L}`, and :math:`O = \sum_{t \ni i} P_t V_t`.
Only ``out`` and ``L`` are kept; the backward recomputes :math:`S_t, P_t`, then
:math:`dS_t = P_t \circ (dO_t V_t^\top - \Delta)` with :math:`\Delta_i = dO_i \cdot O_i`,
``dq``, ``dk``, ``dv`` by scatter-adds of tile products over row (column) blocks.  Edge biases
are scattered into their tile slots (``-inf`` elsewhere) and their gradients gathered from
:math:`dS`; dropout draws with the same counter-based hash as the chunk path
(:func:`~gnn_transformer.backends.dropout.dropout_keep`), so both paths drop the same pairs.

The tiles and their groups are planned once per graph (:mod:`.tile_plan`).

Shapes: T targets, S sources, H heads, C head size (Cv for values), N_t tiles, R row blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dropout import dropout_keep
from .prepared import PreparedGraph
from .tile_plan import TileGroup, TilePlan

__all__ = ["tiled_graph_attention"]


def _blocks(x: Tensor, num_blocks: int, block: int) -> Tensor:
    """(N, H, C) -> contiguous (num_blocks, H, block, C), zero rows past N."""
    if num_blocks * block != x.size(0):
        x = F.pad(x, (0, 0, 0, 0, 0, num_blocks * block - x.size(0)))
    return x.view(num_blocks, block, x.size(1), x.size(2)).transpose(1, 2).contiguous()


def _unblock(x: Tensor, count: int) -> Tensor:
    """(num_blocks, H, block, C) -> (count, H, C)."""
    return x.transpose(1, 2).reshape(-1, x.size(1), x.size(3))[:count]


def _flat(x: Tensor) -> Tensor:
    """(Nt, H, b, X) -> (Nt * H, b, X) for batched products."""
    return x.view(-1, x.size(2), x.size(3))


class _Tiles:
    """Scores and probabilities of one group of tiles; tensors (Nt, H, b, .) gathered once."""

    def __init__(self, plan: TilePlan, group: TileGroup, graph: PreparedGraph, qb, kb, bias, dropout_p, seed):
        self.plan, self.group, self.graph = plan, group, graph
        g = group
        self.q = qb[g.r0:g.r1] if g.one_per_row else qb[g.r0:g.r1][g.rows]  # (Nt, H, b, C), scaled
        self.k = kb[g.c0:g.c0 + g.t1 - g.t0] if g.c0 >= 0 else kb[g.cols]  # (Nt, H, b, C)
        self.bias, self.dropout_p, self.seed = bias, dropout_p, seed
        self.may_be_empty = bias is not None or g.mask is not None  # some row of a tile may have no edge
        self.shape = (g.t1 - g.t0, plan.block, plan.block)  # tiles, rows, columns of each
        self._bias_tiles = None

    def per_tile(self, x: Tensor) -> Tensor:
        """(R_g, H, b, ...) per row block -> (Nt, H, b, ...) per tile."""
        g = self.group
        return x if g.one_per_row else x[g.rows]

    def values(self, vb: Tensor) -> Tensor:
        g = self.group
        return vb[g.c0:g.c0 + g.t1 - g.t0] if g.c0 >= 0 else vb[g.cols]  # (Nt, H, b, Cv)

    def scores(self) -> Tensor:
        """(Nt, H, b, b) scores, finite everywhere; :meth:`masks` says which pairs count.

        Pairs that are not edges keep their (finite) product rather than ``-inf``: ``exp`` of
        ``-inf`` or of a value below the float range runs a slow path on CPU (about 10x), so
        the masks are applied by multiplication around the exponential instead.
        """
        nt, h, rows, _ = self.q.shape
        s = torch.bmm(_flat(self.q), _flat(self.k).transpose(1, 2)).view(nt, h, rows, -1)  # q carries the scale
        if self.bias is not None:
            s.add_(self._bias()[0])
        return s

    def _bias(self) -> tuple[Tensor, Tensor]:
        """The edge biases in their tile slots (0 elsewhere and where ``-inf``), and where they are finite."""
        if self._bias_tiles is None:
            g, (count, rows, cols) = self.group, self.shape
            add = self.q.new_full((count * rows * cols, self.bias.size(1)), float("-inf"))
            add[g.edge_slots] = self.bias[g.edge_ids].to(add.dtype)
            add = add.view(count, rows, cols, -1).permute(0, 3, 1, 2)  # (Nt, H or 1, b, b)
            allowed = torch.isfinite(add)
            self._bias_tiles = add.nan_to_num(neginf=0.0), allowed
        return self._bias_tiles

    def masks(self, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None]:
        """(allowed, blocked): 1 / 0 factors and 0 / ``-inf`` terms (Nt, 1 or H, b, b); ``None`` when every pair counts."""
        if self.bias is None and self.group.mask is None:
            return None, None
        cache = self.group.cache if self.bias is None else {}  # the group's masks depend only on the graph
        if dtype not in cache:
            allowed = self._bias()[1] if self.bias is not None else ~self.group.mask
            cache[dtype] = (allowed.to(dtype),
                            torch.zeros((), dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf")))
        return cache[dtype]

    def keep(self, num_heads: int) -> Tensor | None:
        """Dropout mask (Nt, H, b, b) scaled by 1 / (1 - p), from (seed, target, source, head); ``None``: none."""
        if self.dropout_p == 0.0:
            return None
        graph = self.graph
        target, source = self.nodes()  # (Nt, b) each
        pair = target[:, :, None] * graph.num_sources + source[:, None, :]  # (Nt, b, b)
        heads = torch.arange(num_heads, device=self.q.device)[:, None, None]
        key = pair[:, None] * num_heads + heads  # (Nt, H, b, b)
        keep = dropout_keep(self.seed, key, self.dropout_p, graph.num_targets * graph.num_sources * num_heads)
        return keep.to(self.q.dtype) / (1.0 - self.dropout_p)

    def nodes(self) -> tuple[Tensor, Tensor]:
        """The target (Nt, b) and source (Nt, b) of every row and column of the tiles (clamped past the plane)."""
        g, b, graph = self.group, self.plan.block, self.graph
        local = torch.arange(b, device=self.q.device)
        target = ((g.rows + g.r0)[:, None] * b + local).clamp(max=graph.num_targets - 1)  # (Nt, b)
        source = (g.cols[:, None] * b + local).clamp(max=graph.num_sources - 1)  # (Nt, b); past the plane: masked
        return target, source

    def softmax(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """Probabilities (Nt, H, b, b) (``s`` is overwritten) and the log-sum-exp (R_g, H, b), ``+inf`` for no edge."""
        g = self.group
        allowed, blocked = self.masks(s.dtype)
        row_peak = (s if blocked is None else s + blocked).amax(-1)  # (Nt, H, b)
        if g.one_per_row:
            peak = row_peak
        else:
            peak = s.new_full((g.r1 - g.r0, s.size(1), s.size(2)), float("-inf"))
            peak.scatter_reduce_(0, g.rows[:, None, None].expand_as(row_peak), row_peak, "amax")  # (R_g, H, b)
        if self.may_be_empty:
            peak = peak.nan_to_num(neginf=0.0)  # a row without edges: every exp is masked to 0
        e = self._exp(s.sub_(self.per_tile(peak)[..., None]), allowed)  # (Nt, H, b, b)
        total = self.merge(e.sum(-1, keepdim=True))[..., 0]  # (R_g, H, b)
        lse = peak + total.log()  # -inf where a row has no edge
        if self.may_be_empty:
            lse = lse.nan_to_num(neginf=float("inf"))
            total = total.clamp_min(torch.finfo(total.dtype).tiny)  # e = 0 there: p = 0
        return e.div_(self.per_tile(total)[..., None]), lse

    @staticmethod
    def _exp(d: Tensor, allowed: Tensor | None) -> Tensor:
        """``exp(d)`` where allowed, 0 elsewhere, in place; ``d`` is finite, at most 0 where allowed."""
        if allowed is None:
            return d.exp_()
        return d.mul_(allowed).exp_().mul_(allowed)  # not-allowed pairs: exp(0) * 0, never exp of a huge value

    def probabilities(self, s: Tensor, lse: Tensor) -> Tensor:
        """(Nt, H, b, b) from the log-sum-exp (R_g, H, b); ``s`` is overwritten."""
        if self.may_be_empty:
            lse = lse.nan_to_num(posinf=0.0)  # rows without edges: all masked
        return self._exp(s.sub_(self.per_tile(lse)[..., None]), self.masks(s.dtype)[0])

    def merge(self, per_tile: Tensor) -> Tensor:
        """Sum (Nt, H, b, X) over the tiles of each row block: (R_g, H, b, X)."""
        g = self.group
        if g.one_per_row:
            return per_tile
        return per_tile.new_zeros((g.r1 - g.r0, *per_tile.shape[1:])).index_add_(0, g.rows, per_tile)

    def scatter_columns(self, into: Tensor, per_tile: Tensor) -> None:
        """Add (Nt, H, b, X) per tile into ``into`` (Cb, H, b, X) at each tile's column block."""
        g = self.group
        if g.c0 >= 0:
            into[g.c0:g.c0 + g.t1 - g.t0] += per_tile
        else:
            into.index_add_(0, g.cols, per_tile)

    def slots(self, per_pair: Tensor) -> tuple[Tensor, Tensor]:
        """User edge ids in this group and their values (num, H) from a (Nt, H, b, b) tensor."""
        g = self.group
        flat = per_pair.permute(0, 2, 3, 1).reshape(-1, per_pair.size(1))  # (Nt * b * b, H)
        return g.edge_ids, flat[g.edge_slots]


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _to(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def _forward(plan: TilePlan, qb, kb, vb, bias, graph, dropout_p, seed):
    """Output (R, H, b, Cv) and log-sum-exp (R, H, b) in the tile layout (q carries the scale)."""
    if len(plan.groups) == 1:
        return _forward_group(plan, plan.groups[0], graph, qb, kb, vb, bias, dropout_p, seed)
    out = qb.new_zeros(plan.num_row_blocks, qb.size(1), plan.block, vb.size(3))  # (R, H, b, Cv)
    lse = qb.new_full((plan.num_row_blocks, qb.size(1), plan.block), float("inf"))  # (R, H, b)
    for group in plan.groups:
        out[group.r0:group.r1], lse[group.r0:group.r1] = _forward_group(plan, group, graph, qb, kb, vb, bias,
                                                                        dropout_p, seed)
    return out, lse


def _forward_group(plan, group, graph, qb, kb, vb, bias, dropout_p, seed):
    tiles = _Tiles(plan, group, graph, qb, kb, bias, dropout_p, seed)
    p, lse = tiles.softmax(tiles.scores())  # (Nt, H, b, b), (R_g, H, b)
    keep = tiles.keep(qb.size(1))
    if keep is not None:
        p = p * keep
    values = tiles.values(vb)
    out = torch.bmm(_flat(p), _flat(values)).view(*p.shape[:3], values.size(3))  # (Nt, H, b, Cv)
    return tiles.merge(out), lse


def _backward(plan: TilePlan, qb, kb, vb, bias, ob, lseb, grad_out, graph, dropout_p, seed, bias_grad):
    """dq (scaled as q), dk, dv in the tile layout and the bias gradient (num_edges, H) or ``None``."""
    num_heads = qb.size(1)
    dob = _blocks(_to(grad_out, qb.dtype), plan.num_row_blocks, plan.block)  # (R, H, b, Cv)
    delta = (dob * ob).sum(-1)  # (R, H, b)
    single = len(plan.groups) == 1
    dqb = None if single and plan.groups[0].one_per_row else torch.zeros_like(qb)
    covers = single and plan.groups[0].c0 == 0 and plan.groups[0].t1 == plan.num_col_blocks
    dkb, dvb = (None, None) if covers else (torch.zeros_like(kb), torch.zeros_like(vb))
    dbias = torch.zeros(bias.size(0), num_heads, dtype=qb.dtype, device=qb.device) if bias_grad else None
    for g in plan.groups:
        tiles = _Tiles(plan, g, graph, qb, kb, bias, dropout_p, seed)
        p = tiles.probabilities(tiles.scores(), lseb[g.r0:g.r1])  # (Nt, H, b, b)
        keep = tiles.keep(num_heads)
        dot, values = tiles.per_tile(dob[g.r0:g.r1]), tiles.values(vb)  # (Nt, H, b, Cv) each
        used = p if keep is None else p * keep
        dv = torch.bmm(_flat(used).transpose(1, 2), _flat(dot)).view_as(values)  # (Nt, H, b, Cv)
        dp = torch.bmm(_flat(dot), _flat(values).transpose(1, 2)).view_as(p)  # (Nt, H, b, b)
        if keep is not None:
            dp.mul_(keep)
        ds = p.mul_(dp.sub_(tiles.per_tile(delta[g.r0:g.r1])[..., None]))  # (Nt, H, b, b)
        dq = torch.bmm(_flat(ds), _flat(tiles.k)).view_as(tiles.q)  # (Nt, H, b, C)
        dk = torch.bmm(_flat(ds).transpose(1, 2), _flat(tiles.q)).view_as(tiles.k)  # (Nt, H, b, C)
        if dqb is None:
            dqb = dq
        else:
            dqb[g.r0:g.r1] += tiles.merge(dq)
        if covers:
            dkb, dvb = dk, dv
        else:
            tiles.scatter_columns(dkb, dk)
            tiles.scatter_columns(dvb, dv)
        if dbias is not None:
            ids, values = tiles.slots(ds)
            dbias[ids] = values
    return dqb, dkb, dvb, dbias


class _TiledGraphAttention(torch.autograd.Function):
    """Saves q (scaled), k, v, the output and the log-sum-exp in the tile layout: nothing per pair or edge."""

    @staticmethod
    def forward(ctx, q, k, v, bias, graph, plan, scale, dropout_p, seed):
        work, b = _work_dtype(q.dtype), plan.block
        qb = _blocks(_to(q, work) * scale, plan.num_row_blocks, b)  # (R, H, b, C), scaled
        kb, vb = _blocks(_to(k, work), plan.num_col_blocks, b), _blocks(_to(v, work), plan.num_col_blocks, b)
        ob, lseb = _forward(plan, qb, kb, vb, bias, graph, dropout_p, seed)  # (R, H, b, Cv), (R, H, b)
        ctx.save_for_backward(qb, kb, vb, bias, ob, lseb, seed)
        ctx.graph, ctx.plan, ctx.scale, ctx.dropout_p = graph, plan, scale, dropout_p
        ctx.sizes, ctx.dtypes = (q.size(0), k.size(0)), (q.dtype, k.dtype, v.dtype)
        ctx.mark_non_differentiable(lseb)
        ctx.set_materialize_grads(False)
        return _to(_unblock(ob, q.size(0)), q.dtype), lseb

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        qb, kb, vb, bias, ob, lseb, seed = ctx.saved_tensors
        if grad_out is None:
            return (None,) * 9
        bias_grad = bias is not None and ctx.needs_input_grad[3]
        dqb, dkb, dvb, dbias = _backward(ctx.plan, qb, kb, vb, bias, ob, lseb, grad_out, ctx.graph, ctx.dropout_p,
                                         seed, bias_grad)
        (num_targets, num_sources), (q_dtype, k_dtype, v_dtype) = ctx.sizes, ctx.dtypes
        dq = _to(_unblock(dqb, num_targets) * ctx.scale, q_dtype)
        dk, dv = _to(_unblock(dkb, num_sources), k_dtype), _to(_unblock(dvb, num_sources), v_dtype)
        if dbias is not None:
            dbias = _to(dbias if bias.size(1) > 1 else dbias.sum(1, keepdim=True), bias.dtype)
        return dq, dk, dv, dbias, None, None, None, None, None


@torch.no_grad()
def _weights(plan: TilePlan, q, k, bias, lseb, graph, scale, dropout_p, seed) -> Tensor:
    work, b = _work_dtype(q.dtype), plan.block
    qb, kb = _blocks(_to(q, work) * scale, plan.num_row_blocks, b), _blocks(_to(k, work), plan.num_col_blocks, b)
    weights = q.new_zeros(graph.num_edges, q.size(1))  # (num_edges, H)
    for group in plan.groups:
        tiles = _Tiles(plan, group, graph, qb, kb, bias, dropout_p, seed)
        p = tiles.probabilities(tiles.scores(), lseb[group.r0:group.r1])
        keep = tiles.keep(q.size(1))
        ids, values = tiles.slots(p if keep is None else p * keep)
        weights[ids] = values.to(q.dtype)
    return weights


def tiled_graph_attention(q: Tensor, k: Tensor, v: Tensor, graph: PreparedGraph, plan: TilePlan,
                          edge_bias: Tensor | None, scale: float, dropout_p: float, seed: Tensor | None,
                          need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """Graph attention over the tiles of ``plan``; returns (out (T, H, Cv), weights (num_edges, H) or ``None``)."""
    out, lseb = _TiledGraphAttention.apply(q, k, v, edge_bias, graph, plan, scale, dropout_p, seed)
    weights = None
    if need_weights:
        weights = _weights(plan, q.detach(), k.detach(), None if edge_bias is None else edge_bias.detach(), lseb,
                           graph, scale, dropout_p, seed)
    return out, weights
