r"""The graph-view lab: what the token graph of a Transformer lets you measure.

* :mod:`~gnn_transformer.analysis.paths` -- reachability, hop distances and
  :func:`max_path_length` (how many layers until every token has heard every token).
* :mod:`~gnn_transformer.analysis.complexity` -- Table 1 of "Attention Is All You Need"
  counted on the graphs (:func:`complexity_table`).
* :mod:`~gnn_transformer.analysis.attention_graphs` -- attention as ``networkx.DiGraph``
  (:func:`to_networkx`, :func:`layered_graph`), attention rollout and attention flow.
* :mod:`~gnn_transformer.analysis.rank_collapse` -- "Attention is Not All You Need"
  (arXiv:2103.03404) on any set of graphs (:func:`rank_collapse`).
* :mod:`~gnn_transformer.analysis.plots` -- the figures of the last two (matplotlib).
"""
from .attention_graphs import attention_flow, attention_rollout, layered_graph, mixing_matrix, to_networkx
from .complexity import ComplexityRow, LayerSpec, complexity_table, format_complexity_table, table_1_layers
from .paths import adjacency, max_path_length, reachable, shortest_path_lengths
from .plots import plot_complexity, plot_rank_collapse
from .rank_collapse import (
    ARCHITECTURES,
    CollapseBlock,
    RankCollapseResult,
    default_graphs,
    format_rank_collapse,
    rank_collapse,
    relative_residual,
)

__all__ = [
    "to_networkx",
    "layered_graph",
    "mixing_matrix",
    "attention_rollout",
    "attention_flow",
    "adjacency",
    "max_path_length",
    "reachable",
    "shortest_path_lengths",
    "ComplexityRow",
    "LayerSpec",
    "complexity_table",
    "format_complexity_table",
    "table_1_layers",
    "ARCHITECTURES",
    "CollapseBlock",
    "RankCollapseResult",
    "default_graphs",
    "rank_collapse",
    "format_rank_collapse",
    "relative_residual",
    "plot_complexity",
    "plot_rank_collapse",
]
