r"""The ``"fused"`` backend: autograd around the Triton kernels of :mod:`.triton_attention`.

Forward: one launch, output (T, H, Cv) and the log-sum-exp (T, H) in float32; those, q, k,
v and the bias are all that is kept for backward (nothing of size num_edges x H).
Backward: :math:`\Delta_i = do_i \cdot o_i` (T, H), then one launch per column block for
dk, dv and the bias gradient and one per row block for dq, both recomputing the scores.
Attention weights, when asked for, come from a third kernel that recomputes them from the
log-sum-exp: a second, non-differentiable pass (the weights are detached; differentiate
through weights with ``backend="reference"``).

Launch settings (warps, pipeline stages) are first guesses for an H100 and are meant to be
tuned there; the tile size is the prepared graph's ``block_size``.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

from ..prepared import PreparedGraph, TileLayout
from . import triton_attention as kernels

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


def _block(size: int) -> int:
    return max(16, 1 << (size - 1).bit_length())


def _launch_options(tiles: TileLayout, head_dim: int) -> dict:
    if INTERPRETED:
        return {}
    big = max(tiles.block_m, tiles.block_n) >= 128 or head_dim > 64
    return {"num_warps": 8 if big else 4, "num_stages": 2}


def check_fused_inputs(q: Tensor, graph: PreparedGraph) -> None:
    """Errors that name what the fused backend cannot run, and what to do instead."""
    if q.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"the fused backend runs Triton kernels on CUDA tensors, got {q.device.type} tensors: move q, k, v and "
            f"the graph to a GPU, use backend='chunked' (or 'auto') on CPU, or set TRITON_INTERPRET=1 before "
            f"gnn_transformer.backends.fused is imported to run the kernels through Triton's interpreter (slow; for tests)"
        )
    if q.dtype not in DTYPES:
        raise TypeError(f"the fused backend runs float16, bfloat16 and float32 (it accumulates in float32), got "
                        f"{q.dtype}: use backend='chunked' or 'reference' for {q.dtype}")
    if graph.tiles.has_duplicates:
        raise ValueError(
            "the fused backend needs each edge j -> i at most once (its tiles are bitmasks), but edge_index repeats "
            "an edge: remove the duplicates (torch_geometric.utils.coalesce), or use backend='chunked' or 'reference'"
        )


class _FusedGraphAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, tiles: TileLayout, edge_ids, scale: float, dropout_p: float, seed: int):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse = _forward(q, k, v, bias, tiles, edge_ids, scale, dropout_p, seed)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.tiles, ctx.edge_ids, ctx.scale, ctx.dropout_p, ctx.seed = tiles, edge_ids, scale, dropout_p, seed
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        q, k, v, bias, out, lse = ctx.saved_tensors
        dq, dk, dv, dbias = _backward(q, k, v, bias, out, lse, grad_out.contiguous(), ctx.tiles, ctx.edge_ids,
                                      ctx.scale, ctx.dropout_p, ctx.seed,
                                      bias_grad=bias is not None and ctx.needs_input_grad[3])
        return dq, dk, dv, dbias, None, None, None, None, None


def _scalars(q: Tensor, k: Tensor, scale: float, dropout_p: float, seed: int) -> dict:
    return dict(num_targets=q.size(0), num_sources=k.size(0), num_heads=q.size(1), qk_scale=scale * kernels.LOG2E,
                dropout_p=float(dropout_p), seed=seed)


def _constants(q: Tensor, bias: Tensor | None, tiles: TileLayout, edge_ids: Tensor | None, dropout_p: float) -> dict:
    """Compile-time constants shared by every kernel (one compilation per combination)."""
    return dict(
        HEAD_DIM=q.size(2), BLOCK_D=_block(q.size(2)), BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BITS=tiles.bits,
        HAS_BIAS=bias is not None, DROPOUT=dropout_p > 0.0, IDENTITY=edge_ids is None,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # tf32 only names the default for 16-bit inputs
    )


def _values(v: Tensor) -> dict:
    return dict(VALUE_DIM=v.size(2), BLOCK_DV=_block(v.size(2)))


def _bias(bias: Tensor | None, q: Tensor) -> tuple[Tensor, int, int]:
    """Bias pointer and strides (head stride 0 for a bias shared by all heads); q stands in for none."""
    if bias is None:
        return q, 0, 0
    return bias, bias.stride(0), 0 if bias.size(1) == 1 else bias.stride(1)


def _edge_tiles(tiles: TileLayout, edge_ids: Tensor | None, by: str) -> tuple:
    """Tile arrays in a kernel's argument order: walked per row block (``"row"``) or column block."""
    edge_id = edge_ids if edge_ids is not None else tiles.tile_offset  # never read when IDENTITY
    if by == "row":
        return (tiles.tile_col, tiles.tile_offset, tiles.tile_mask, tiles.masks, edge_id, tiles.row_ptr,
                tiles.row_order)
    return (tiles.tile_row, tiles.tile_offset, tiles.tile_mask, tiles.masks, edge_id, tiles.col_ptr,
            tiles.col_tiles, tiles.col_order)


def _forward(q, k, v, bias, tiles, edge_ids, scale, dropout_p, seed) -> tuple[Tensor, Tensor]:
    out = torch.empty(q.size(0), q.size(1), v.size(2), dtype=q.dtype, device=q.device)  # (T, H, Cv)
    lse = torch.empty(q.size(0), q.size(1), dtype=torch.float32, device=q.device)  # (T, H), base 2
    bias_ptr, *bias_strides = _bias(bias, q)
    kernels.forward_kernel[(tiles.num_row_blocks, q.size(1))](
        q, k, v, bias_ptr, out, lse, *_edge_tiles(tiles, edge_ids, "row"),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        *bias_strides, **_scalars(q, k, scale, dropout_p, seed), **_values(v),
        **_constants(q, bias, tiles, edge_ids, dropout_p), **_launch_options(tiles, q.size(2)),
    )
    return out, lse


def _backward(q, k, v, bias, out, lse, grad_out, tiles, edge_ids, scale, dropout_p, seed, bias_grad: bool):
    delta = (grad_out.float() * out.float()).sum(-1)  # (T, H)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbias = None
    if bias_grad:  # per head even for a bias shared by all heads; summed below
        dbias = torch.zeros(bias.size(0), q.size(1), dtype=torch.float32, device=q.device)  # (num_edges, H)
    bias_ptr, *bias_strides = _bias(bias, q)
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
               grad_out.stride(0), grad_out.stride(1), *bias_strides)
    common = dict(**_scalars(q, k, scale, dropout_p, seed), scale=scale, **_values(v),
                  **_constants(q, bias, tiles, edge_ids, dropout_p), **_launch_options(tiles, q.size(2)))
    kernels.backward_kv_kernel[(tiles.num_col_blocks, q.size(1))](
        q, k, v, bias_ptr, grad_out, lse, delta, dk, dv, dbias if dbias is not None else lse,
        *_edge_tiles(tiles, edge_ids, "column"), *strides, BIAS_GRAD=bias_grad, **common,
    )
    kernels.backward_q_kernel[(tiles.num_row_blocks, q.size(1))](
        q, k, v, bias_ptr, grad_out, lse, delta, dq, *_edge_tiles(tiles, edge_ids, "row"), *strides, **common,
    )
    if dbias is not None:
        dbias = (dbias if bias.size(1) > 1 else dbias.sum(1, keepdim=True)).to(bias.dtype)
    return dq, dk, dv, dbias


@torch.no_grad()
def _weights(q, k, bias, lse, tiles, edge_ids, scale, dropout_p, seed, num_edges) -> Tensor:
    weights = torch.zeros(num_edges, q.size(1), dtype=q.dtype, device=q.device)  # (num_edges, H)
    bias_ptr, *bias_strides = _bias(bias, q)
    kernels.weights_kernel[(tiles.num_row_blocks, q.size(1))](
        q, k, bias_ptr, lse, weights, *_edge_tiles(tiles, edge_ids, "row"),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), *bias_strides, **_scalars(q, k, scale, dropout_p, seed),
        **_constants(q, bias, tiles, edge_ids, dropout_p), **_launch_options(tiles, q.size(2)),
    )
    return weights


def fused_graph_attention(q: Tensor, k: Tensor, v: Tensor, graph: PreparedGraph, edge_bias: Tensor | None,
                          scale: float, dropout_p: float = 0.0,
                          need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """Graph attention by the Triton kernels; returns (out (T, H, Cv), weights (num_edges, H) or ``None``).

    ``edge_bias`` is (num_edges, H) or (num_edges, 1) in the user's edge order; ``weights``
    are detached (computed by a second pass from the saved log-sum-exp).
    """
    check_fused_inputs(q, graph)
    if q.size(2) > MAX_HEAD_DIM or v.size(2) > MAX_HEAD_DIM:
        raise ValueError(f"the fused backend supports head sizes up to {MAX_HEAD_DIM}, got {q.size(2)} and {v.size(2)}")
    tiles = graph.tiles
    # an edge's user id is needed for its bias, its dropout draw and its returned weight
    edge_ids = graph.tile_edge_ids if edge_bias is not None or dropout_p > 0.0 or need_weights else None
    seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0.0 else 0
    out, lse = _FusedGraphAttention.apply(q, k, v, edge_bias, tiles, edge_ids, scale, dropout_p, seed)
    weights = None
    if need_weights:
        weights = _weights(q.detach().contiguous(), k.detach().contiguous(),
                           None if edge_bias is None else edge_bias.detach(), lse, tiles, edge_ids, scale, dropout_p,
                           seed, graph.num_edges)
    return out, weights
