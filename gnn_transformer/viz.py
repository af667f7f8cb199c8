"""Pictures of token graphs and attention (matplotlib, the ``viz`` extra).

Functions draw on a given ``matplotlib`` axis (or a new figure) and return the axis, so
they compose into panels; :func:`save` writes PNG or SVG.  The backend is chosen by
matplotlib; scripts without a screen should call ``matplotlib.use("Agg")`` first (the
command line does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["attention_matrix", "plot_attention_heatmap", "draw_bipartite_attention", "save"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("pictures need matplotlib: pip install 'gnn-transformer[viz]'") from error
    return plt


def attention_matrix(edge_index: Tensor, weights: Tensor, num_targets: int, num_sources: int) -> Tensor:
    """Per-edge weights (num_edges,) or (num_edges, H) -> dense (T, S) or (H, T, S), zero where no edge."""
    weights = weights.detach()
    squeeze = weights.dim() == 1
    weights = weights.unsqueeze(-1) if squeeze else weights
    dense = weights.new_zeros(weights.size(1), num_targets, num_sources)
    source, target = edge_index
    dense[:, target, source] = weights.t()
    return dense[0] if squeeze else dense


def plot_attention_heatmap(matrix: Tensor, source_labels: Sequence[str] | None = None,
                           target_labels: Sequence[str] | None = None, ax=None, title: str | None = None,
                           cmap: str = "viridis"):
    """Heatmap of a (T, S) attention matrix: one row per query (target), one column per key (source)."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(1 + 0.4 * matrix.size(1), 1 + 0.4 * matrix.size(0)))
    image = ax.imshow(matrix.detach().cpu().float().numpy(), cmap=cmap, vmin=0.0, aspect="auto")
    if source_labels is not None:
        ax.set_xticks(range(len(source_labels)), labels=list(source_labels), rotation=90)
    if target_labels is not None:
        ax.set_yticks(range(len(target_labels)), labels=list(target_labels))
    ax.set_xlabel("key (source token j)")
    ax.set_ylabel("query (target token i)")
    if title:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def draw_bipartite_attention(matrix: Tensor, source_labels: Sequence[str], target_labels: Sequence[str], ax=None,
                             title: str | None = None, min_weight: float = 0.02):
    """The bipartite cross-attention graph: source tokens on the left, targets on the right,
    one line per edge with width and opacity proportional to its weight (edges below
    ``min_weight`` are left out for legibility)."""
    plt = _pyplot()
    matrix = matrix.detach().cpu().float()
    num_targets, num_sources = matrix.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 0.35 * max(num_targets, num_sources) + 1))
    source_y = torch.linspace(1, 0, num_sources) if num_sources > 1 else torch.tensor([0.5])
    target_y = torch.linspace(1, 0, num_targets) if num_targets > 1 else torch.tensor([0.5])
    peak = float(matrix.max()) or 1.0
    for i in range(num_targets):
        for j in range(num_sources):
            w = float(matrix[i, j]) / peak
            if w >= min_weight:
                ax.plot([0, 1], [float(source_y[j]), float(target_y[i])], color="tab:blue", alpha=w, linewidth=3 * w)
    for y, label in zip(source_y.tolist(), source_labels):
        ax.text(-0.05, y, label, ha="right", va="center")
    for y, label in zip(target_y.tolist(), target_labels):
        ax.text(1.05, y, label, ha="left", va="center")
    ax.set_xlim(-0.5, 1.5)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def save(figure_or_ax, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure (or the figure of an axis) as PNG or SVG, creating the folder; returns the path."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ValueError(f"pictures are saved as .png or .svg, got {path.name!r}")
    figure = getattr(figure_or_ax, "figure", figure_or_ax)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    _pyplot().close(figure)
    return path
