r"""Rank collapse: "Attention is Not All You Need" (Dong, Cordonnier & Loukas, arXiv:2103.03404), on graphs.

The paper measures how far the token representations :math:`X` (n x d) of one sequence
are from rank one, relative to their size,

.. math::

    \operatorname{res}(X) = \frac{\lVert X - \mathbf 1 x^\top \rVert}{\lVert X \rVert}, \qquad
    x = \operatorname{arg\,min}_x \lVert X - \mathbf 1 x^\top \rVert ,

and proves that a stack of pure self-attention layers drives it to zero *doubly*
exponentially with depth, while skip connections stop the collapse and MLPs slow it.
In the graph view every attention layer averages each token over its in-neighbours, so
the graph decides how fast tokens become alike: this module runs the experiment on any
set of graphs (complete, causal, window, random, ...) with the library's attention.

Norms: ``"frobenius"`` (the mean row is the exact minimiser) or the paper's composite
``"l1,inf"`` norm :math:`\sqrt{\lVert R \rVert_1 \lVert R \rVert_\infty}` (largest column
sum times largest row sum of :math:`|R|`), evaluated at the mean row as in public
implementations of the experiment (its exact minimiser has no closed form).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter
from tqdm.auto import tqdm

from .. import graphs
from ..core.attention import GraphMultiheadAttention
from ..graphs import patterns
from ._table import format_columns

__all__ = ["relative_residual", "CollapseBlock", "ARCHITECTURES", "default_graphs", "RankCollapseResult",
           "rank_collapse", "format_rank_collapse"]

NORMS = ("frobenius", "l1,inf")

# name -> (skip connection, MLP, layer norm)
ARCHITECTURES: dict[str, tuple[bool, bool, bool]] = {
    "attention": (False, False, False),
    "attention + skip": (True, False, False),
    "attention + MLP": (False, True, False),
    "attention + layer norm": (False, False, True),
    "transformer layer": (True, True, True),
}


def relative_residual(x: Tensor, lengths, norm: str = "frobenius") -> Tensor:
    r""":math:`\operatorname{res}(X_b)` of every sequence of a ragged batch of node features.

    Args:
        x: (N, d) node features, sequences one after another.
        lengths: tokens per sequence (B,).
        norm: ``"frobenius"`` or ``"l1,inf"``.

    Returns:
        (B,) relative residuals in [0, 1] (Frobenius); 0 means rank one (all rows equal).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    lengths = graphs.as_lengths(lengths, device=x.device)
    if int(lengths.sum()) != x.size(0):
        raise ValueError(f"lengths add up to {int(lengths.sum())} tokens but x has {x.size(0)} rows")
    batch = graphs.batch_vector(lengths)  # (N,)
    size = lengths.numel()
    mean = scatter(x, batch, 0, size, reduce="mean")  # (B, d): the minimising row
    residual = x - mean[batch]  # (N, d)

    def measure(r: Tensor) -> Tensor:
        if norm == "frobenius":
            return scatter(r.pow(2).sum(1), batch, 0, size, reduce="sum").sqrt()  # (B,)
        column = scatter(r.abs(), batch, 0, size, reduce="sum").amax(dim=1)  # (B,) ||R||_1
        row = scatter(r.abs().sum(1), batch, 0, size, reduce="max")  # (B,) ||R||_inf
        return (column * row).sqrt()

    return measure(residual) / measure(x)


class CollapseBlock(nn.Module):
    r"""One layer of the experiment: self-attention on a graph with optional parts.

    .. math::

        y = \text{SA}_G(x) \;(+\, x \text{ with skip}), \quad y \leftarrow \text{LN}(y), \quad
        y \leftarrow \text{MLP}(y) \;(+\, y \text{ with skip}), \quad y \leftarrow \text{LN}(y)

    Without any part it is the paper's pure self-attention layer; with all three it is the
    post-norm Transformer encoder layer (without dropout).
    """

    def __init__(self, d_model: int, nhead: int, skip: bool = False, mlp: bool = False, layer_norm: bool = False,
                 dim_feedforward: int | None = None, dtype=None) -> None:
        super().__init__()
        self.skip, self.layer_norm = skip, layer_norm
        self.self_attn = GraphMultiheadAttention(d_model, nhead, dtype=dtype)
        hidden = 4 * d_model if dim_feedforward is None else dim_feedforward
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden, dtype=dtype), nn.ReLU(),
                                 nn.Linear(hidden, d_model, dtype=dtype)) if mlp else None
        self.norm1 = nn.LayerNorm(d_model, dtype=dtype) if layer_norm else None
        self.norm2 = nn.LayerNorm(d_model, dtype=dtype) if layer_norm and mlp else None

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        y = self.self_attn(x, x, x, edge_index)  # (N, d)
        y = x + y if self.skip else y
        y = self.norm1(y) if self.norm1 is not None else y
        if self.mlp is not None:
            z = self.mlp(y)
            y = y + z if self.skip else z
            y = self.norm2(y) if self.norm2 is not None else y
        return y


def default_graphs(radius: int = 2, num_random: int = 3, seed: int = 0) -> dict[str, Callable]:
    """complete, causal, window (``radius``) and random (``num_random`` random keys per query + self)."""
    return {
        "complete": graphs.complete,
        "causal": graphs.causal,
        f"window r={radius}": lambda lengths: patterns.sliding_window(lengths, radius),
        f"random k={num_random}": lambda lengths: patterns.bigbird(lengths, 0, 0, num_random, seed=seed),
    }


@dataclass
class RankCollapseResult:
    """``residuals[architecture][graph]``: (depth + 1, B) relative residual after each layer (row 0: input)."""

    residuals: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    norm: str = "frobenius"
    config: dict = field(default_factory=dict)

    def mean(self, architecture: str, graph: str) -> Tensor:
        """Mean over sequences, (depth + 1,)."""
        return self.residuals[architecture][graph].mean(dim=1)


@torch.no_grad()
def rank_collapse(graphs_by_name: dict[str, Callable] | None = None, architectures: Sequence[str] | None = None, *,
                  depth: int = 12, lengths: Sequence[int] = (32,) * 8, d_model: int = 64, nhead: int = 4,
                  norm: str = "frobenius", seed: int = 0, dtype: torch.dtype = torch.float64,
                  progress: bool = False) -> RankCollapseResult:
    r"""Run the rank-collapse experiment: random inputs through ``depth`` random blocks per
    architecture, on each graph, recording :func:`relative_residual` after every layer.

    Every graph sees the same inputs and the same weights (seeded per architecture), so
    rows differ only by the graph.  Inputs are standard normal; weights are those of
    freshly initialised torch modules (Xavier-uniform attention projections).

    Args:
        graphs_by_name: name -> builder ``lengths -> edge_index`` (default :func:`default_graphs`).
        architectures: names from :data:`ARCHITECTURES` (default: all).
        depth, lengths, d_model, nhead: stack depth, tokens per sequence, width, heads.
        norm: ``"frobenius"`` or ``"l1,inf"``.
        seed: seeds inputs and weights.
        dtype: float64 by default, to follow the collapse far below float32's resolution.
    """
    graphs_by_name = default_graphs(seed=seed) if graphs_by_name is None else graphs_by_name
    architectures = list(ARCHITECTURES) if architectures is None else list(architectures)
    unknown = [a for a in architectures if a not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"unknown architectures {unknown}; choose from {list(ARCHITECTURES)}")
    lengths = graphs.as_lengths(list(lengths))
    x0 = torch.randn(int(lengths.sum()), d_model, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    result = RankCollapseResult(norm=norm, config=dict(depth=depth, lengths=lengths.tolist(), d_model=d_model,
                                                       nhead=nhead, seed=seed, dtype=str(dtype)))
    jobs = [(a, g) for a in architectures for g in graphs_by_name]
    for architecture, graph_name in tqdm(jobs, desc="rank collapse", disable=not progress):
        skip, mlp, layer_norm = ARCHITECTURES[architecture]
        with torch.random.fork_rng(devices=[]):  # the same weights for every graph, the caller's RNG untouched
            torch.manual_seed(seed)
            blocks = [CollapseBlock(d_model, nhead, skip, mlp, layer_norm, dtype=dtype) for _ in range(depth)]
        edge_index = graphs_by_name[graph_name](lengths)
        x, residuals = x0, [relative_residual(x0, lengths, norm)]
        for block in blocks:
            x = block(x, edge_index)
            residuals.append(relative_residual(x, lengths, norm))
        result.residuals.setdefault(architecture, {})[graph_name] = torch.stack(residuals)  # (depth + 1, B)
    return result


def format_rank_collapse(result: RankCollapseResult, layers: Sequence[int] | None = None) -> str:
    """The mean relative residual after selected layers, one row per (architecture, graph)."""
    depth = result.config.get("depth", 0)
    layers = [l for l in (0, 1, 2, 3, 4, 6, 8, 12, 16, 24) if l <= depth] if layers is None else list(layers)
    header = ["architecture", "graph", *[f"L={l}" for l in layers]]
    body = [[architecture, graph, *[f"{float(result.mean(architecture, graph)[l]):.1e}" for l in layers]]
            for architecture, by_graph in result.residuals.items() for graph in by_graph]
    return f"mean relative residual res(X) ({result.norm} norm) after L layers\n" + format_columns(header, body)
