r"""2-D patterns over a grid of image tokens, as in DALL-E (arXiv:2102.12092, appendix B.1).

A sequence holds ``text_length`` text tokens followed by the :math:`h \times w` image tokens
of one image in raster order (row by row): image token :math:`(r, c)` sits at position
``text_length + r * w + c``.  Text tokens attend to the text (all of it, or the earlier
tokens when ``causal``); every image token attends to all text tokens and, inside the
image, to

* :func:`grid_rows` -- the tokens of its row,
* :func:`grid_columns` -- the tokens of its column,
* :func:`grid_window` -- the tokens of a ``kernel_size`` x ``kernel_size`` neighbourhood
  (DALL-E's "convolutional" mask).

DALL-E is a decoder: its masks are these graphs with ``causal=True`` (no key after its
query in raster order), used in different layers -- a per-layer list of edge sets.
Batches of images of different sizes are disjoint unions like any ragged batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..builders import _contiguous_ranges
from ._build import Layout, check_positive, coalesce, restrict_causal

__all__ = ["grid_rows", "grid_columns", "grid_window", "grid_lengths"]

GridLike = tuple[int, int] | list | Tensor


def _shapes(grid: GridLike) -> Tensor:
    """(h, w), a list of (h, w) or a (B, 2) tensor -> (B, 2) int64."""
    shapes = torch.as_tensor(grid)
    if shapes.dim() == 1:
        shapes = shapes.unsqueeze(0)
    if shapes.dim() != 2 or shapes.size(1) != 2 or shapes.dtype.is_floating_point or shapes.dtype == torch.bool:
        raise ValueError(f"grid must be (height, width), a list of them or a (B, 2) integer tensor, got {grid!r}")
    if bool((shapes < 1).any()):
        raise ValueError(f"grid heights and widths must be positive, got {shapes.tolist()}")
    return shapes.long()


def grid_lengths(grid: GridLike, text_length: int = 0) -> Tensor:
    """Tokens per sequence: ``text_length + h * w`` for every image, shape (B,)."""
    check_positive(text_length, "text_length", minimum=0)
    shapes = _shapes(grid)
    return text_length + shapes[:, 0] * shapes[:, 1]


def _grid_edges(grid: GridLike, text_length: int, causal: bool, candidates) -> Tensor:
    """Text edges plus image edges from ``candidates(row, col, height, width) -> (rows, cols, keep)``."""
    check_positive(text_length, "text_length", minimum=0)
    shapes = _shapes(grid)
    layout = Layout.of(text_length + shapes[:, 0] * shapes[:, 1])
    is_image = layout.position >= text_length  # (N,)
    pixel = (layout.position - text_length).clamp(min=0)  # (N,) raster index inside the image
    height, width = shapes[layout.batch, 0], shapes[layout.batch, 1]  # (N,), (N,)
    row, col = pixel // width, pixel % width
    start = layout.ptr[layout.batch]  # (N,) first node of the sequence
    text_edges = _contiguous_ranges(start, torch.full_like(pixel, text_length))  # every query reads the text
    # image keys of image queries
    image_nodes = is_image.nonzero().squeeze(1)  # (N_img,)
    rows, cols, keep = candidates(row[image_nodes, None], col[image_nodes, None], height[image_nodes, None],
                                  width[image_nodes, None])  # (N_img, K) each
    keep = keep & (rows >= 0) & (rows < height[image_nodes, None]) & (cols >= 0) & (cols < width[image_nodes, None])
    query, slot = keep.nonzero(as_tuple=True)
    source = (start[image_nodes] + text_length)[query] + rows[query, slot] * width[image_nodes][query] + cols[query, slot]
    image_edges = torch.stack([source, image_nodes[query]])
    edges = coalesce(torch.cat([text_edges, image_edges], dim=1), layout.num_nodes)
    return restrict_causal(edges, layout.position) if causal else edges


def grid_rows(grid: GridLike, text_length: int = 0, causal: bool = False) -> Tensor:
    r"""Row attention: image token :math:`(r, c)` attends to :math:`(r, c')` for every column :math:`c'`.

    Args:
        grid: (height, width) of the image, a list of them, or a (B, 2) tensor (one per sequence).
        text_length: text tokens before the image in every sequence.
        causal: keep only keys at or before the query in raster order.

    Example::

        >>> grid_rows((2, 2))                    # two rows of two tokens: 0 1 / 2 3
        tensor([[0, 1, 0, 1, 2, 3, 2, 3],
                [0, 0, 1, 1, 2, 2, 3, 3]])
    """
    def candidates(row, col, height, width):
        cols = torch.arange(int(width.max()) if width.numel() else 0, device=row.device)[None, :]  # (1, W)
        return row.expand(-1, cols.size(1)), cols.expand(row.size(0), -1), cols < width

    return _grid_edges(grid, text_length, causal, candidates)


def grid_columns(grid: GridLike, text_length: int = 0, causal: bool = False) -> Tensor:
    r"""Column attention: image token :math:`(r, c)` attends to :math:`(r', c)` for every row :math:`r'`."""
    def candidates(row, col, height, width):
        rows = torch.arange(int(height.max()) if height.numel() else 0, device=row.device)[None, :]  # (1, H)
        return rows.expand(row.size(0), -1), col.expand(-1, rows.size(1)), rows < height

    return _grid_edges(grid, text_length, causal, candidates)


def grid_window(grid: GridLike, kernel_size: int = 3, text_length: int = 0, causal: bool = False) -> Tensor:
    r"""Convolutional attention: :math:`(r, c)` attends to :math:`(r + a, c + b)`, :math:`|a|, |b| \le (k - 1) / 2`.

    ``kernel_size`` must be odd (the neighbourhood is centred on the query).
    """
    check_positive(kernel_size, "kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(f"grid_window needs an odd kernel_size (a centred neighbourhood), got {kernel_size}")
    half = kernel_size // 2

    def candidates(row, col, height, width):
        shift = torch.arange(-half, half + 1, device=row.device)
        d_row, d_col = shift.repeat_interleave(kernel_size), shift.repeat(kernel_size)  # (k^2,) raster order
        rows, cols = row + d_row[None, :], col + d_col[None, :]
        return rows, cols, torch.ones_like(rows, dtype=torch.bool)

    return _grid_edges(grid, text_length, causal, candidates)
