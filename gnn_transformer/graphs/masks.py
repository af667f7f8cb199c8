"""torch attention masks <-> edges and per-edge biases.

torch's masks say where attention is *blocked* (bool ``True``, or ``-inf`` in an
additive float mask); an edge ``j -> i`` says query ``i`` *may* attend to key ``j``.
Finite entries of a float mask are additive score biases, carried per edge.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from ..backends.validation import as_edge_index, check_edge_index
from ..errors import MaskShapeError, MaskTypeError

__all__ = ["edges_from_mask", "edges_to_mask"]


def _count(value, name: str, minimum: int = 0) -> int:
    """A size argument: a Python or NumPy integer >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _tensor_or_none(value, name: str) -> None:
    if value is not None and not isinstance(value, Tensor):
        raise MaskTypeError(f"{name} must be a bool or floating-point tensor or None, got {type(value).__name__}")


def _additive(mask: Tensor, name: str, dtype: torch.dtype) -> Tensor:
    """A torch mask as an additive float mask: bool ``True`` -> ``-inf``, float kept."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    if not mask.dtype.is_floating_point:
        raise MaskTypeError(f"{name} must be a bool or floating-point tensor, got dtype {mask.dtype}")
    if bool(torch.isnan(mask).any()) or bool((mask == float("inf")).any()):
        raise ValueError(f"{name} contains NaN or +inf; use -inf (or True in a bool mask) to block a position")
    return mask.to(dtype)


def edges_from_mask(
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    *,
    batch_size: int,
    tgt_len: int,
    src_len: int,
    num_heads: int = 1,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Convert torch attention masks of a dense batch into edges and per-edge biases.

    The dense batch has ``B`` sequences of ``L`` targets (queries) and ``S``
    sources (keys); target ``i`` of sequence ``b`` is node ``b * L + i`` and
    source ``j`` is node ``b * S + j``.  The masks follow
    ``torch.nn.MultiheadAttention``: the effective additive mask is
    ``attn_mask + key_padding_mask`` (bools become ``-inf`` where ``True``).
    An edge ``j -> i`` exists where that sum is finite for at least one head;
    its bias is the sum itself (``-inf`` for a head that blocks an edge
    another head allows).

    Args:
        attn_mask: (L, S) or (B * num_heads, L, S), bool or float, or ``None``.
        key_padding_mask: (B, S), bool or float, or ``None``.
        batch_size, tgt_len, src_len: B, L, S.
        num_heads: needed to read a 3-D ``attn_mask``.
        dtype: dtype of the returned biases (default: the float mask's, else float32).

    Returns:
        ``(edge_index, edge_bias)``: edge_index (2, num_edges) sorted by target then
        source; edge_bias (num_edges, H') with H' = num_heads for a 3-D mask, else 1,
        or ``None`` when no float mask was given (all biases are zero).
    """
    _tensor_or_none(attn_mask, "attn_mask")
    _tensor_or_none(key_padding_mask, "key_padding_mask")
    batch_size, tgt_len, src_len = (_count(v, n) for v, n in ((batch_size, "batch_size"), (tgt_len, "tgt_len"),
                                                                (src_len, "src_len")))
    num_heads = _count(num_heads, "num_heads", minimum=1)
    masks = [m for m in (attn_mask, key_padding_mask) if m is not None]
    float_given = any(m.dtype.is_floating_point for m in masks)
    if dtype is None:
        dtype = next((m.dtype for m in masks if m.dtype.is_floating_point), torch.float32)
    device = masks[0].device if masks else None
    total = torch.zeros(batch_size, 1, tgt_len, src_len, dtype=dtype, device=device)  # (B, H', L, S)
    if attn_mask is not None:
        additive = _additive(attn_mask, "attn_mask", dtype)
        if attn_mask.dim() == 2:
            if tuple(attn_mask.shape) != (tgt_len, src_len):
                raise MaskShapeError(
                    f"attn_mask has shape {tuple(attn_mask.shape)} but should be "
                    f"(tgt_len, src_len) = {(tgt_len, src_len)}"
                )
            total = total + additive[None, None]
        elif attn_mask.dim() == 3:
            expected = (batch_size * num_heads, tgt_len, src_len)
            if tuple(attn_mask.shape) != expected:
                raise MaskShapeError(
                    f"attn_mask has shape {tuple(attn_mask.shape)} but a 3-D mask should be "
                    f"(batch_size * num_heads, tgt_len, src_len) = {expected}"
                )
            total = total + additive.view(batch_size, num_heads, tgt_len, src_len)
        else:
            raise MaskShapeError(f"attn_mask must be 2-D or 3-D, got {attn_mask.dim()}-D {tuple(attn_mask.shape)}")
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (batch_size, src_len):
            raise MaskShapeError(
                f"key_padding_mask has shape {tuple(key_padding_mask.shape)} but should be "
                f"(batch_size, src_len) = {(batch_size, src_len)}"
            )
        total = total + _additive(key_padding_mask, "key_padding_mask", dtype)[:, None, None, :]
    allowed = torch.isfinite(total).any(dim=1)  # (B, L, S)
    b, i, j = allowed.nonzero(as_tuple=True)  # row-major: sorted by (b, i), then j
    edge_index = torch.stack([b * src_len + j, b * tgt_len + i])
    edge_bias = total[b, :, i, j]  # (num_edges, H')
    if not float_given and bool((edge_bias == 0).all()):
        edge_bias = None  # bool masks that agree across heads carry no bias
    return edge_index, edge_bias


def edges_to_mask(
    edge_index: Tensor,
    num_targets: int,
    num_sources: int,
    edge_bias: Tensor | None = None,
) -> Tensor:
    r"""Convert edges (and biases) into a dense torch mask over all nodes.

    Without biases the result is a bool mask of shape (num_targets, num_sources),
    ``True`` where there is *no* edge (torch's "blocked").  With biases of shape
    (num_edges, H) it is an additive float mask of shape (H, num_targets, num_sources)
    holding the bias on each edge and ``-inf`` elsewhere.  Duplicate edges are
    not representable in a dense mask and raise an error.
    """
    num_targets, num_sources = _count(num_targets, "num_targets"), _count(num_sources, "num_sources")
    check_edge_index(as_edge_index(edge_index), num_sources, num_targets)  # type, shape and range, named
    edge_index = as_edge_index(edge_index)
    if edge_bias is not None and (not isinstance(edge_bias, Tensor) or not edge_bias.dtype.is_floating_point
                                  or edge_bias.size(0) != edge_index.size(1)):
        raise TypeError(f"edge_bias must be a floating-point tensor with one row per edge ({edge_index.size(1)}), "
                        f"got {getattr(edge_bias, 'dtype', type(edge_bias).__name__)} "
                        f"{tuple(getattr(edge_bias, 'shape', ()))}")
    source, target = edge_index
    flat = target * num_sources + source
    if flat.numel() and int(torch.unique(flat).numel()) != flat.numel():
        raise ValueError("edge_index holds duplicate edges, which a dense mask cannot represent")
    if edge_bias is None:
        mask = torch.ones(num_targets, num_sources, dtype=torch.bool, device=edge_index.device)
        mask[target, source] = False
        return mask
    bias = edge_bias.reshape(edge_index.size(1), -1)  # (num_edges, H)
    mask = torch.full(
        (bias.size(1), num_targets, num_sources), float("-inf"), dtype=bias.dtype, device=bias.device
    )
    mask[:, target, source] = bias.t()
    return mask
