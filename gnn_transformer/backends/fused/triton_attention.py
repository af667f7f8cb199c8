r"""Triton kernels of the fused backend: block-sparse graph attention with online softmax.

Work is cut along the tiles of a :class:`~gnn_transformer.backends.prepared.TileLayout`.  One program
owns ``block_m`` targets and one head; it walks the tiles of its row block (only tiles that
hold edges), computes the tile's scores on tensor cores, masks the pairs that are not
edges (full tiles need no bitmask) and keeps FlashAttention's running state per target
(arXiv:2205.14135, 2307.08691), in base 2 (``exp2``, scores pre-multiplied by
:math:`\log_2 e`):

.. math::

    m_i \leftarrow \max(m_i, \max_j s_{ij}), \qquad
    \ell_i \leftarrow \ell_i\, 2^{m_i^\text{old} - m_i} + \sum_j 2^{s_{ij} - m_i}, \qquad
    a_i \leftarrow a_i\, 2^{m_i^\text{old} - m_i} + \sum_j 2^{s_{ij} - m_i} v_j

and stores :math:`o_i = a_i / \ell_i` and the log-sum-exp :math:`L_i = m_i + \log_2 \ell_i`
(``+inf`` for a target without edges, whose output is 0).  Nothing per edge is stored.
The backward recomputes :math:`p_{ij} = 2^{s_{ij} - L_i}` tile by tile:

.. math::

    dv_j = \sum_i p_{ij}\, do_i, \quad ds_{ij} = p_{ij} (do_i \cdot v_j - \Delta_i), \quad
    \Delta_i = do_i \cdot o_i, \quad dq_i = \text{scale} \sum_j ds_{ij} k_j, \quad
    dk_j = \text{scale} \sum_i ds_{ij} q_i

(dk, dv and the edge-bias gradient ``ds`` per column block, dq per row block).  An edge's
position inside its tile is its row-major rank among the tile's edges (two prefix sums of
the tile mask), which gives its user edge id for biases, dropout and returned weights.
Dropout keeps an edge with the Philox stream at offset ``edge_id * H + head``, so the
forward, the backward and the weights pass drop the same edges.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _tile_edges(tile, rows, cols, num_targets, num_sources, tile_mask_ptr, masks_ptr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BITS: tl.constexpr):
    """(BLOCK_M, BLOCK_N) bool: which (target, source) pairs of ``tile`` are edges."""
    inside = (rows < num_targets)[:, None] & (cols < num_sources)[None, :]
    slot = tl.load(tile_mask_ptr + tile)  # -1: full tile
    words_per_row: tl.constexpr = BLOCK_N // BITS
    local_r = tl.arange(0, BLOCK_M)
    local_c = tl.arange(0, BLOCK_N)
    word_ptr = (masks_ptr + slot.to(tl.int64) * (BLOCK_M * words_per_row) + local_r[:, None] * words_per_row
                + (local_c // BITS)[None, :])
    partial = (tl.zeros([BLOCK_M, BLOCK_N], tl.int32) + slot) >= 0  # a block, not a scalar, in the mask
    words = tl.load(word_ptr, mask=inside & partial, other=-1)  # (BLOCK_M, BLOCK_N) int32
    return inside & (((words >> (local_c % BITS)[None, :]) & 1) != 0)


@triton.jit
def _edge_ids(tile, edges, tile_offset_ptr, edge_id_ptr, IDENTITY: tl.constexpr):
    """User edge id of every edge of the tile (row-major rank inside the tile + tile offset)."""
    ones = edges.to(tl.int32)
    per_row = tl.sum(ones, 1)
    rank = (tl.cumsum(per_row, 0) - per_row)[:, None] + tl.cumsum(ones, 1) - ones
    position = tl.load(tile_offset_ptr + tile) + rank  # tile-major position
    if IDENTITY:
        ids = position.to(tl.int64)
    else:
        ids = tl.load(edge_id_ptr + position, mask=edges, other=0).to(tl.int64)
    return ids


@triton.jit
def _scores(q, k, edges, eid, head, bias_ptr, stride_be, stride_bh, qk_scale,
            HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr):
    """Masked scores in base 2: (scale <q_i, k_j> + b_ij) log2(e), -inf off the edges."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N) fp32
    if HAS_BIAS:
        b = tl.load(bias_ptr + eid * stride_be + head * stride_bh, mask=edges, other=0.0)
        s += b.to(tl.float32) * 1.4426950408889634
    return tl.where(edges, s, float("-inf"))


@triton.jit
def _kept(eid, head, num_heads, seed, dropout_p):
    return tl.rand(seed, eid * num_heads + head) >= dropout_p


@triton.jit
def _load_rows(ptr, rows, stride_t, head, stride_h, num_rows, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    """(len(rows), BLOCK) features of one head, zero outside the rows and the head size."""
    d = tl.arange(0, BLOCK)
    mask = (rows < num_rows)[:, None] & (d < WIDTH)[None, :]
    return tl.load(ptr + rows.to(tl.int64)[:, None] * stride_t + head * stride_h + d[None, :], mask=mask, other=0.0)


@triton.jit
def forward_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr,
    tile_col_ptr, tile_offset_ptr, tile_mask_ptr, masks_ptr, edge_id_ptr, row_ptr_ptr, row_order_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh, stride_be, stride_bh,
    num_targets, num_sources, num_heads, qk_scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BITS: tl.constexpr, HAS_BIAS: tl.constexpr,
    DROPOUT: tl.constexpr, IDENTITY: tl.constexpr, PRECISION: tl.constexpr,
):
    row_block = tl.load(row_order_ptr + tl.program_id(0))
    head = tl.program_id(1)
    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _load_rows(q_ptr, rows, stride_qt, head, stride_qh, num_targets, HEAD_DIM, BLOCK_D)  # (BLOCK_M, BLOCK_D)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    eid = tl.zeros([BLOCK_M, BLOCK_N], tl.int64)
    for tile in range(tl.load(row_ptr_ptr + row_block), tl.load(row_ptr_ptr + row_block + 1)):
        cols = tl.load(tile_col_ptr + tile) * BLOCK_N + tl.arange(0, BLOCK_N)
        k = _load_rows(k_ptr, cols, stride_kt, head, stride_kh, num_sources, HEAD_DIM, BLOCK_D)  # (BLOCK_N, BLOCK_D)
        v = _load_rows(v_ptr, cols, stride_vt, head, stride_vh, num_sources, VALUE_DIM, BLOCK_DV)
        edges = _tile_edges(tile, rows, cols, num_targets, num_sources, tile_mask_ptr, masks_ptr,
                            BLOCK_M, BLOCK_N, BITS)
        if HAS_BIAS or DROPOUT:
            eid = _edge_ids(tile, edges, tile_offset_ptr, edge_id_ptr, IDENTITY)
        s = _scores(q, k, edges, eid, head, bias_ptr, stride_be, stride_bh, qk_scale, HAS_BIAS, PRECISION)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no edge yet: exp2(-inf) = 0
        p = tl.math.exp2(s - m_use[:, None])  # (BLOCK_M, BLOCK_N)
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            p = tl.where(_kept(eid, head, num_heads, seed, dropout_p), p / (1.0 - dropout_p), 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    reached = l_i > 0.0
    out = acc / tl.where(reached, l_i, 1.0)[:, None]
    lse = tl.where(reached, m_i + tl.math.log2(tl.where(reached, l_i, 1.0)), float("inf"))
    dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < num_targets
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_ot + head * stride_oh + dv[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & (dv < VALUE_DIM)[None, :])
    tl.store(lse_ptr + rows.to(tl.int64) * num_heads + head, lse, mask=row_ok)


@triton.jit
def backward_kv_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dbias_ptr,
    tile_row_ptr, tile_offset_ptr, tile_mask_ptr, masks_ptr, edge_id_ptr, col_ptr_ptr, col_tiles_ptr, col_order_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh, stride_be, stride_bh,
    num_targets, num_sources, num_heads, qk_scale, scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BITS: tl.constexpr, HAS_BIAS: tl.constexpr,
    BIAS_GRAD: tl.constexpr, DROPOUT: tl.constexpr, IDENTITY: tl.constexpr, PRECISION: tl.constexpr,
):
    """dk, dv (and ds = d bias) of one column block and head, over the tiles of that column block."""
    col_block = tl.load(col_order_ptr + tl.program_id(0))
    head = tl.program_id(1)
    cols = col_block * BLOCK_N + tl.arange(0, BLOCK_N)
    k = _load_rows(k_ptr, cols, stride_kt, head, stride_kh, num_sources, HEAD_DIM, BLOCK_D)  # (BLOCK_N, BLOCK_D)
    v = _load_rows(v_ptr, cols, stride_vt, head, stride_vh, num_sources, VALUE_DIM, BLOCK_DV)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    eid = tl.zeros([BLOCK_M, BLOCK_N], tl.int64)
    for index in range(tl.load(col_ptr_ptr + col_block), tl.load(col_ptr_ptr + col_block + 1)):
        tile = tl.load(col_tiles_ptr + index)
        rows = tl.load(tile_row_ptr + tile) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < num_targets
        q = _load_rows(q_ptr, rows, stride_qt, head, stride_qh, num_targets, HEAD_DIM, BLOCK_D)
        do = _load_rows(do_ptr, rows, stride_dot, head, stride_doh, num_targets, VALUE_DIM, BLOCK_DV)
        lse = tl.load(lse_ptr + rows.to(tl.int64) * num_heads + head, mask=row_ok, other=float("inf"))
        delta = tl.load(delta_ptr + rows.to(tl.int64) * num_heads + head, mask=row_ok, other=0.0)
        edges = _tile_edges(tile, rows, cols, num_targets, num_sources, tile_mask_ptr, masks_ptr,
                            BLOCK_M, BLOCK_N, BITS)
        if HAS_BIAS or BIAS_GRAD or DROPOUT:
            eid = _edge_ids(tile, edges, tile_offset_ptr, edge_id_ptr, IDENTITY)
        s = _scores(q, k, edges, eid, head, bias_ptr, stride_be, stride_bh, qk_scale, HAS_BIAS, PRECISION)
        p = tl.math.exp2(s - lse[:, None])  # (BLOCK_M, BLOCK_N) softmax weights
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # d weights
        if DROPOUT:
            kept = _kept(eid, head, num_heads, seed, dropout_p)
            p_used = tl.where(kept, p / (1.0 - dropout_p), 0.0)
            dp = tl.where(kept, dp / (1.0 - dropout_p), 0.0)
        else:
            p_used = p
        dv += tl.dot(tl.trans(p_used.to(do.dtype)), do, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])  # d score
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
        if BIAS_GRAD:
            tl.store(dbias_ptr + eid * num_heads + head, ds, mask=edges)
    d = tl.arange(0, BLOCK_D)
    d_v = tl.arange(0, BLOCK_DV)
    col_ok = cols < num_sources
    base = cols.to(tl.int64)[:, None] * (num_heads * HEAD_DIM) + head * HEAD_DIM
    tl.store(dk_ptr + base + d[None, :], (dk * scale).to(dk_ptr.dtype.element_ty),
             mask=col_ok[:, None] & (d < HEAD_DIM)[None, :])
    base = cols.to(tl.int64)[:, None] * (num_heads * VALUE_DIM) + head * VALUE_DIM
    tl.store(dv_ptr + base + d_v[None, :], dv.to(dv_ptr.dtype.element_ty),
             mask=col_ok[:, None] & (d_v < VALUE_DIM)[None, :])


@triton.jit
def backward_q_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    tile_col_ptr, tile_offset_ptr, tile_mask_ptr, masks_ptr, edge_id_ptr, row_ptr_ptr, row_order_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh, stride_be, stride_bh,
    num_targets, num_sources, num_heads, qk_scale, scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BITS: tl.constexpr, HAS_BIAS: tl.constexpr,
    DROPOUT: tl.constexpr, IDENTITY: tl.constexpr, PRECISION: tl.constexpr,
):
    """dq of one row block and head, over the tiles of that row block."""
    row_block = tl.load(row_order_ptr + tl.program_id(0))
    head = tl.program_id(1)
    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < num_targets
    q = _load_rows(q_ptr, rows, stride_qt, head, stride_qh, num_targets, HEAD_DIM, BLOCK_D)
    do = _load_rows(do_ptr, rows, stride_dot, head, stride_doh, num_targets, VALUE_DIM, BLOCK_DV)
    lse = tl.load(lse_ptr + rows.to(tl.int64) * num_heads + head, mask=row_ok, other=float("inf"))
    delta = tl.load(delta_ptr + rows.to(tl.int64) * num_heads + head, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    eid = tl.zeros([BLOCK_M, BLOCK_N], tl.int64)
    for tile in range(tl.load(row_ptr_ptr + row_block), tl.load(row_ptr_ptr + row_block + 1)):
        cols = tl.load(tile_col_ptr + tile) * BLOCK_N + tl.arange(0, BLOCK_N)
        k = _load_rows(k_ptr, cols, stride_kt, head, stride_kh, num_sources, HEAD_DIM, BLOCK_D)
        v = _load_rows(v_ptr, cols, stride_vt, head, stride_vh, num_sources, VALUE_DIM, BLOCK_DV)
        edges = _tile_edges(tile, rows, cols, num_targets, num_sources, tile_mask_ptr, masks_ptr,
                            BLOCK_M, BLOCK_N, BITS)
        if HAS_BIAS or DROPOUT:
            eid = _edge_ids(tile, edges, tile_offset_ptr, edge_id_ptr, IDENTITY)
        s = _scores(q, k, edges, eid, head, bias_ptr, stride_be, stride_bh, qk_scale, HAS_BIAS, PRECISION)
        p = tl.math.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if DROPOUT:
            dp = tl.where(_kept(eid, head, num_heads, seed, dropout_p), dp / (1.0 - dropout_p), 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    d = tl.arange(0, BLOCK_D)
    tl.store(dq_ptr + rows.to(tl.int64)[:, None] * (num_heads * HEAD_DIM) + head * HEAD_DIM + d[None, :],
             (dq * scale).to(dq_ptr.dtype.element_ty), mask=row_ok[:, None] & (d < HEAD_DIM)[None, :])


@triton.jit
def weights_kernel(
    q_ptr, k_ptr, bias_ptr, lse_ptr, weights_ptr,
    tile_col_ptr, tile_offset_ptr, tile_mask_ptr, masks_ptr, edge_id_ptr, row_ptr_ptr, row_order_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_be, stride_bh,
    num_targets, num_sources, num_heads, qk_scale, dropout_p, seed,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BITS: tl.constexpr, HAS_BIAS: tl.constexpr, DROPOUT: tl.constexpr, IDENTITY: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Attention weights per edge and head (after dropout), from the saved log-sum-exp."""
    row_block = tl.load(row_order_ptr + tl.program_id(0))
    head = tl.program_id(1)
    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _load_rows(q_ptr, rows, stride_qt, head, stride_qh, num_targets, HEAD_DIM, BLOCK_D)
    lse = tl.load(lse_ptr + rows.to(tl.int64) * num_heads + head, mask=rows < num_targets, other=float("inf"))
    for tile in range(tl.load(row_ptr_ptr + row_block), tl.load(row_ptr_ptr + row_block + 1)):
        cols = tl.load(tile_col_ptr + tile) * BLOCK_N + tl.arange(0, BLOCK_N)
        k = _load_rows(k_ptr, cols, stride_kt, head, stride_kh, num_sources, HEAD_DIM, BLOCK_D)
        edges = _tile_edges(tile, rows, cols, num_targets, num_sources, tile_mask_ptr, masks_ptr,
                            BLOCK_M, BLOCK_N, BITS)
        eid = _edge_ids(tile, edges, tile_offset_ptr, edge_id_ptr, IDENTITY)
        s = _scores(q, k, edges, eid, head, bias_ptr, stride_be, stride_bh, qk_scale, HAS_BIAS, PRECISION)
        p = tl.math.exp2(s - lse[:, None])
        if DROPOUT:
            p = tl.where(_kept(eid, head, num_heads, seed, dropout_p), p / (1.0 - dropout_p), 0.0)
        tl.store(weights_ptr + eid * num_heads + head, p.to(weights_ptr.dtype.element_ty), mask=edges)


__all__ = ["forward_kernel", "backward_kv_kernel", "backward_q_kernel", "weights_kernel", "LOG2E", "triton"]
