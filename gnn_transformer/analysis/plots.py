"""Figures of the experiments: Table 1 against n, and the rank-collapse curves (matplotlib)."""
from __future__ import annotations

from typing import Sequence

from .complexity import ComplexityRow
from .rank_collapse import RankCollapseResult
from .viz import _pyplot

__all__ = ["plot_complexity", "plot_rank_collapse"]

_MARKERS = "osD^v<>phX*"


def plot_complexity(rows: Sequence[ComplexityRow], layers: Sequence[str] | None = None):
    """Operations per layer, sequential operations and maximum path length against n (log-log),
    one line per layer type; returns the figure."""
    plt = _pyplot()
    by_layer: dict[str, list[ComplexityRow]] = {}
    for row in rows:
        if layers is None or row.layer in layers:
            by_layer.setdefault(row.layer, []).append(row)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = (("operations", "operations per layer"), ("sequential", "sequential operations"),
              ("max_path_length", "maximum path length (layers)"))
    for ax, (field, title) in zip(axes, panels):
        for index, (layer, group) in enumerate(by_layer.items()):
            group = sorted(group, key=lambda r: r.n)
            ax.plot([r.n for r in group], [max(getattr(r, field), 0.8) for r in group],
                    marker=_MARKERS[index % len(_MARKERS)], label=layer)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    figure.suptitle("Table 1 of 'Attention Is All You Need', measured on the graphs")
    figure.tight_layout()
    return figure


def plot_rank_collapse(result: RankCollapseResult, floor: float = 1e-16):
    """Mean relative residual against depth (log scale), one panel per architecture, one line
    per graph; returns the figure."""
    plt = _pyplot()
    architectures = list(result.residuals)
    columns = min(len(architectures), 3)
    rows = -(-len(architectures) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False, sharey=True)
    for ax, architecture in zip(axes.flat, architectures):
        for index, graph in enumerate(result.residuals[architecture]):
            curve = result.mean(architecture, graph).clamp(min=floor)
            ax.plot(range(curve.numel()), curve.tolist(), marker=_MARKERS[index % len(_MARKERS)], markersize=3,
                    label=graph)
        ax.set_yscale("log")
        ax.set_title(architecture)
        ax.set_xlabel("layer")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"res(X), {result.norm}")
    for ax in list(axes.flat)[len(architectures):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle("Rank collapse: relative distance of the token representations from rank one")
    figure.tight_layout()
    return figure
