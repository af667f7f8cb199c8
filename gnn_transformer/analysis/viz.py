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

__all__ = ["attention_matrix", "plot_attention_heatmap", "draw_bipartite_attention", "save", "draw_token_graph",
           "plot_adjacency", "plot_attention_heads"]


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


def _token_positions(num_nodes: int, layout: str, graph, grid: tuple[int, int] | None, text_length: int,
                     center: Sequence[int] = ()) -> dict:
    """Node -> (x, y) for the layouts of :func:`draw_token_graph`."""
    import networkx as nx

    if layout == "line":
        return {k: (float(k), 0.0) for k in range(num_nodes)}
    if layout == "circle":
        ring = nx.circular_layout(graph.subgraph([k for k in range(num_nodes) if k not in set(center)]))
        return {**ring, **{k: (0.0, 0.0) for k in center}}
    if layout == "spring":
        return nx.spring_layout(graph, seed=0)
    if layout == "grid":
        if grid is None:
            raise ValueError("layout='grid' needs grid=(height, width) of the image tokens")
        height, width = grid
        text = {k: (float(k) - text_length, 1.5) for k in range(text_length)}
        image = {text_length + k: (float(k % width), -float(k // width)) for k in range(height * width)}
        return {**text, **image}
    raise ValueError(f"layout must be 'line', 'circle', 'spring' or 'grid', got {layout!r}")


def draw_token_graph(edge_index: Tensor, num_nodes: int, weights: Tensor | None = None, *,
                     labels: Sequence[str] | None = None, head: int | None = None, layout: str = "line",
                     grid: tuple[int, int] | None = None, text_length: int = 0, center: Sequence[int] = (),
                     self_loops: bool = False,
                     min_weight: float = 0.0, ax=None, title: str | None = None, cmap: str = "viridis"):
    """Draw a token graph, or one layer's attention, with networkx.

    Every edge ``j -> i`` is an arrow from key to query.  With ``weights`` ((num_edges,) or
    (num_edges, H); ``head`` picks one, else the mean) the arrow's width and colour show the
    weight, and edges below ``min_weight`` times the largest are left out.  Layouts:
    ``"line"`` (tokens in reading order, edges as arcs: to later tokens above, to earlier
    ones below), ``"circle"`` (the ``center`` nodes, such as a star's relay, in the middle),
    ``"spring"``, ``"grid"`` (image tokens in their ``grid`` after ``text_length`` text
    tokens).  Self-loops are hidden unless ``self_loops``.
    """
    import networkx as nx

    from .attention_graphs import to_networkx

    plt = _pyplot()
    graph = to_networkx(edge_index, num_nodes, weights, head=head, labels=labels)
    if not self_loops:
        graph.remove_edges_from(list(nx.selfloop_edges(graph)))
    if ax is None:
        wide = layout == "line"
        _, ax = plt.subplots(figsize=(max(6.0, 0.45 * num_nodes), 3.2) if wide else (6, 6))
    position = _token_positions(num_nodes, layout, graph, grid, text_length, center)
    edges = list(graph.edges(data="weight"))
    peak = max((w for _, _, w in edges if w is not None), default=1.0) or 1.0
    if weights is not None:
        edges = [(u, v, w) for u, v, w in edges if w >= min_weight * peak]
    colormap = plt.get_cmap(cmap)
    if edges:  # rad < 0 bends an arc left of its direction: above for later targets, below for earlier
        nx.draw_networkx_edges(
            graph, position, edgelist=[(u, v) for u, v, _ in edges], ax=ax, arrows=True, arrowsize=8,
            connectionstyle="arc3,rad=-0.35" if layout == "line" else "arc3,rad=0.08", node_size=260,
            width=[0.6 + 3.0 * w / peak for _, _, w in edges] if weights is not None else 0.8,
            edge_color=[colormap(w / peak) for _, _, w in edges] if weights is not None else "0.45",
        )
    if layout == "line":
        span = max((abs(v - u) for u, v, _ in edges), default=1)
        ax.set_ylim(-0.2 * span - 0.6 if any(v < u for u, v, _ in edges) else -0.6,
                    0.2 * span + 0.6 if any(v > u for u, v, _ in edges) else 0.6)
    nx.draw_networkx_nodes(graph, position, ax=ax, node_size=260, node_color="white", edgecolors="0.2")
    names = {k: str(labels[k]) if labels is not None else str(k) for k in range(num_nodes)}
    nx.draw_networkx_labels(graph, position, labels=names, ax=ax, font_size=7)
    if weights is not None:
        mappable = plt.cm.ScalarMappable(cmap=colormap, norm=plt.Normalize(0.0, peak))
        ax.figure.colorbar(mappable, ax=ax, fraction=0.03, pad=0.02, label="attention weight")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def plot_adjacency(edge_index: Tensor, num_targets: int, num_sources: int | None = None, ax=None,
                   title: str | None = None, color: str = "tab:blue"):
    """The pattern as a matrix: a filled cell where query i (row) may attend to key j (column)."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator

    num_sources = num_targets if num_sources is None else num_sources
    allowed = attention_matrix(edge_index, torch.ones(edge_index.size(1)), num_targets, num_sources)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4 * num_targets / max(num_sources, 1)))
    ax.imshow(allowed.numpy(), cmap=ListedColormap(["white", color]), vmin=0, vmax=1, interpolation="nearest")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title(title if title else f"{edge_index.size(1)} edges")
    return ax


def plot_attention_heads(edge_index: Tensor, weights: Tensor, num_targets: int, num_sources: int | None = None,
                         source_labels: Sequence[str] | None = None, target_labels: Sequence[str] | None = None,
                         columns: int = 4, title: str | None = None):
    """One heatmap per head of per-edge weights (num_edges, H); returns the figure."""
    plt = _pyplot()
    num_sources = num_targets if num_sources is None else num_sources
    dense = attention_matrix(edge_index, weights.reshape(weights.size(0), -1), num_targets, num_sources)  # (H, T, S)
    heads = dense.size(0)
    columns = min(columns, heads)
    rows = -(-heads // columns)
    size = 0.9 + 0.28 * max(num_sources, num_targets)
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns + 1, size * rows), squeeze=False)
    for head, ax in enumerate(axes.flat):
        if head >= heads:
            ax.axis("off")
            continue
        plot_attention_heatmap(dense[head], source_labels, target_labels, ax=ax, title=f"head {head}")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
