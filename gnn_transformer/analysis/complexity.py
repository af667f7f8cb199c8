r"""Table 1 of "Attention Is All You Need", measured on the graphs.

The paper compares layer types by three numbers (section 4, Table 1): the cost of one
layer, the operations that must run one after another, and the maximum path length
between two positions.  In the graph view all three are properties of the layer's graph
on :math:`n` tokens of width :math:`d`, so they can be *counted* instead of quoted:

* **operations per layer** -- a message per edge plus the per-token work.  Attention:
  a score and a weighted value per edge and the projections per token,
  :math:`|E| \cdot d + n \cdot d^2`.  Recurrent and convolutional layers multiply every
  message by a :math:`d \times d` matrix: :math:`|E| \cdot d^2`.
* **sequential operations** -- dependent rounds inside one layer: 1 plus the longest path
  of the layer's within-layer dependency graph.  Attention and convolutions read only
  the previous layer (no such edges: 1); a recurrent layer must finish step :math:`t - 1`
  before step :math:`t` (the chain without self-loops: :math:`n`).
* **maximum path length** -- :func:`~gnn_transformer.analysis.max_path_length` of the
  layer's graph (or of the per-layer graphs of a dilated stack).
* **communication on P devices** -- with the tokens split into P contiguous ranges, one per
  device, a device needs the messages of the remote sources its edges reference: the layer's
  edge cut, counted as distinct (receiving device, source) pairs
  (:func:`~gnn_transformer.backends.distributed.cut_rows`, what the halo exchange of
  :mod:`gnn_transformer.backends.distributed` sends), times the size of a message: a key and
  a value, :math:`2d`, for attention, :math:`d` for recurrent and convolutional layers.  The
  complete graph moves :math:`(P - 1)\, n \cdot 2d` (every device's rows to every other:
  :math:`O(n d)`), the window of radius :math:`r` only :math:`2r \cdot 2d` per boundary
  between neighbouring devices (:math:`O(r d)`, independent of :math:`n`), the chain one
  hidden state per boundary.

The rows of the paper are the complete graph, the window of radius :math:`r`
("restricted"), the chain (recurrent), the causal convolution of width :math:`k` and the
stack of dilated convolutions (dilations :math:`1, k, k^2, \dots` below :math:`n`); more
rows add the sparse patterns of :mod:`gnn_transformer.graphs.patterns`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import networkx as nx
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import graphs
from ..backends.distributed import contiguous_partition, cut_rows
from ..graphs import patterns
from ._table import format_columns
from .paths import max_path_length

__all__ = ["ComplexityRow", "LayerSpec", "table_1_layers", "complexity_table", "format_complexity_table",
           "sequential_operations", "growth_exponent", "communication_per_layer"]


@dataclass(frozen=True)
class LayerSpec:
    """One row of the table: how to build the layer's graph(s) for n tokens, and how it computes."""

    layer: str  # the paper's layer type
    graph: str  # our graph, with its parameters
    build: Callable[[int], Tensor | list[Tensor]]  # n -> edge_index, or a list per layer
    messages: str  # "attention" (|E| d + n d^2) or "matrix" (|E| d^2)
    recurrent: bool = False  # messages within the layer depend on each other along the chain
    paper: tuple[str, str, str] = ("-", "-", "-")  # Table 1: complexity, sequential, path length
    nodes: Callable[[int], int] = lambda n: n  # nodes of the graph for n tokens (star adds a relay)
    communication: str = "-"  # the order of the elements sent per layer on P devices


@dataclass(frozen=True)
class ComplexityRow:
    """Measured numbers of one layer type at one sequence length."""

    layer: str
    graph: str
    n: int
    edges: float  # per layer (mean over the layers of a per-layer stack)
    operations: float
    sequential: int
    max_path_length: int
    paper: tuple[str, str, str]
    devices: int = 1  # P, the devices the tokens are split over
    communication: float = 0.0  # elements sent between devices per layer (mean over a per-layer stack)
    communication_order: str = "-"


def _dilations(n: int, kernel_size: int) -> list[int]:
    """Dilations 1, k, k^2, ... that still fit in n tokens (WaveNet / ByteNet stacks)."""
    out = [1]
    while out[-1] * kernel_size < n:
        out.append(out[-1] * kernel_size)
    return out


def table_1_layers(radius: int = 4, kernel_size: int = 3, extra: bool = True) -> list[LayerSpec]:
    """The paper's rows (complete, restricted, recurrent, convolutional, dilated) and, with
    ``extra``, the causal graph and sparse patterns (strided, BigBird, star)."""
    k, r = kernel_size, radius
    rows = [
        LayerSpec("Self-Attention", "complete", lambda n: graphs.complete([n]), "attention",
                  paper=("O(n^2 d)", "O(1)", "O(1)"), communication="O(n d)"),
        LayerSpec("Recurrent", "chain", lambda n: patterns.chain([n]), "matrix", recurrent=True,
                  paper=("O(n d^2)", "O(n)", "O(n)"), communication="O(d) per boundary"),
        LayerSpec("Convolutional", f"causal conv k={k}", lambda n: patterns.convolution([n], k), "matrix",
                  paper=("O(k n d^2)", "O(1)", "O(n/k)"), communication="O(k d) per boundary"),
        LayerSpec("Convolutional (dilated)", f"dilations 1,{k},{k * k},...",
                  lambda n: [patterns.convolution([n], k, dilation=d) for d in _dilations(n, k)], "matrix",
                  paper=("O(k n d^2)", "O(1)", "O(log_k n)")),
        LayerSpec("Self-Attention (restricted)", f"window r={r}", lambda n: patterns.sliding_window([n], r),
                  "attention", paper=("O(r n d)", "O(1)", "O(n/r)"), communication="O(r d) per boundary"),
    ]
    if extra:
        rows += [
            LayerSpec("Self-Attention (masked)", "causal", lambda n: graphs.causal([n]), "attention",
                      communication="O(n d)"),
            LayerSpec("Sparse Transformer", "strided l=ceil(sqrt n)",
                      lambda n: patterns.strided([n], math.ceil(math.sqrt(n))), "attention"),
            LayerSpec("BigBird", f"window r={r} + 1 global + 2 random",
                      lambda n: patterns.bigbird([n], r, 1, 2), "attention"),
            LayerSpec("Star-Transformer", "ring + relay", lambda n: patterns.star([n]), "attention",
                      nodes=lambda n: n + 1),
        ]
    return rows


def sequential_operations(edge_index: Tensor, num_nodes: int, recurrent: bool) -> int:
    """Dependent rounds inside one layer: 1, or 1 + the longest path of the recurrence's DAG."""
    if not recurrent:
        return 1
    keep = edge_index[0] != edge_index[1]  # self-loops are the step's own input, not a dependency
    dependencies = nx.DiGraph()
    dependencies.add_nodes_from(range(num_nodes))
    dependencies.add_edges_from(edge_index[:, keep].t().tolist())
    if not nx.is_directed_acyclic_graph(dependencies):
        raise ValueError("a recurrent layer's graph must be acyclic (each step reads earlier steps)")
    return 1 + nx.dag_longest_path_length(dependencies)


def communication_per_layer(edge_index: Tensor, num_nodes: int, devices: int, message_size: int) -> int:
    """Elements sent between ``devices`` devices holding contiguous ranges of the ``num_nodes`` nodes, in one
    layer on ``edge_index``: the edge cut's distinct (receiving device, source) pairs x ``message_size``."""
    partition = contiguous_partition(num_nodes, devices)
    return int(cut_rows(edge_index, partition).sum()) * message_size


def _measure(spec: LayerSpec, n: int, d_model: int, devices: int) -> ComplexityRow:
    built = spec.build(n)
    layers = built if isinstance(built, list) else [built]
    nodes = spec.nodes(n)
    edges = sum(e.size(1) for e in layers) / len(layers)
    per_edge = d_model if spec.messages == "attention" else d_model ** 2
    per_node = d_model ** 2 if spec.messages == "attention" else 0
    message = 2 * d_model if spec.messages == "attention" else d_model  # a key and a value, or one vector
    sent = sum(communication_per_layer(e, nodes, devices, message) for e in layers) / len(layers)
    return ComplexityRow(
        layer=spec.layer, graph=spec.graph, n=n, edges=edges, operations=edges * per_edge + nodes * per_node,
        sequential=max(sequential_operations(e, nodes, spec.recurrent) for e in layers),
        max_path_length=max_path_length(built, nodes), paper=spec.paper, devices=devices, communication=sent,
        communication_order=spec.communication,
    )


def complexity_table(lengths: Sequence[int] = (16, 32, 64, 128, 256, 512), d_model: int = 64, *,
                     layers: Sequence[LayerSpec] | None = None, radius: int = 4, kernel_size: int = 3,
                     devices: int = 4, progress: bool = False) -> list[ComplexityRow]:
    r"""Measure every layer type at every sequence length: one :class:`ComplexityRow` per (layer, n).

    Args:
        lengths: the sequence lengths n.
        d_model: the width d.
        layers: the rows (default :func:`table_1_layers` with ``radius`` and ``kernel_size``).
        devices: P, the devices of the communication column (contiguous ranges of tokens).
        progress: show a progress bar.
    """
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    layers = table_1_layers(radius, kernel_size) if layers is None else list(layers)
    jobs = [(spec, n) for spec in layers for n in lengths]
    return [_measure(spec, n, d_model, devices) for spec, n in tqdm(jobs, desc="complexity", disable=not progress)]


def growth_exponent(rows: Sequence[ComplexityRow], field: str) -> float:
    r"""The least-squares slope of :math:`\log y` against :math:`\log n` over the rows of one layer:
    about 2 for :math:`O(n^2)`, 1 for :math:`O(n)`, 0 for :math:`O(1)`, near 0 and falling for
    :math:`O(\log n)`."""
    x = torch.tensor([math.log(row.n) for row in rows], dtype=torch.float64)
    y = torch.tensor([math.log(max(float(getattr(row, field)), 1e-300)) for row in rows], dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum()) if float((x * x).sum()) > 0 else 0.0


def format_complexity_table(rows: Sequence[ComplexityRow], d_model: int | None = None) -> str:
    """Two tables: every layer at the largest n next to the paper's Table 1, with the measured
    growth exponents over all n; then the maximum path length at every n."""
    by_layer: dict[str, list[ComplexityRow]] = {}
    for row in rows:
        by_layer.setdefault(row.layer, []).append(row)
    largest = max(row.n for row in rows)
    devices = rows[0].devices
    header = ["layer type", "graph", "edges", "ops/layer", "seq.", "max path", f"sent/layer P={devices}",
              "edges ~ n^", "path ~ n^", "sent ~ n^", "Table 1: complexity", "sequential", "max path",
              f"sent on P={devices}"]
    body = []
    for layer, group in by_layer.items():
        last = next(row for row in group if row.n == largest)
        body.append([layer, last.graph, f"{last.edges:.0f}", f"{last.operations:.3g}", str(last.sequential),
                     str(last.max_path_length), f"{last.communication:.3g}", f"{growth_exponent(group, 'edges'):.2f}",
                     f"{growth_exponent(group, 'max_path_length'):.2f}",
                     f"{growth_exponent(group, 'communication'):.2f}", *last.paper, last.communication_order])
    width = f", d = {d_model}" if d_model is not None else ""
    first = (f"Measured at n = {largest}{width}; exponents fitted over n = {sorted({r.n for r in rows})}; "
             f"sent/layer: elements between {devices} devices holding contiguous token ranges (the edge cut)\n")
    lengths = sorted({row.n for row in rows})
    path_header = ["max path length", *[f"n={n}" for n in lengths]]
    path_body = [[layer, *[str(next(r.max_path_length for r in group if r.n == n)) for n in lengths]]
                 for layer, group in by_layer.items()]
    return first + format_columns(header, body) + "\n\n" + format_columns(path_header, path_body)
