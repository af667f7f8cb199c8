"""Check an attention backend against the reference message-passing path on graphs of every kind.

:func:`graph_cases` returns small token graphs of each kind a backend must handle (complete,
causal and bipartite ragged batches, a sliding window, a random graph in shuffled edge order,
a hub with many in-edges beside degree-1 nodes, targets without edges);
:func:`compare_backend` runs a backend and the reference on the same random q, k, v and
per-edge bias (some entries ``-inf``) and returns the relative differences of the output,
the attention weights and the gradients of q, k, v and the bias.  The reference runs in
float64 on the same values, so the differences measure the backend alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .. import graphs
from ..backends.prepared import PreparedGraph
from ..core.functional import graph_attention
from .parity import relative_difference

__all__ = ["GraphCase", "graph_cases", "compare_backend", "window_graph"]


@dataclass
class GraphCase:
    """An edge index with its node counts."""

    edge_index: Tensor
    num_sources: int
    num_targets: int


def window_graph(num_nodes: int, radius: int, device=None) -> Tensor:
    """Sliding-window graph: ``j -> i`` for ``|i - j| <= radius``, sorted by target then source."""
    node = torch.arange(num_nodes, device=device)
    first = (node - radius).clamp(min=0)
    return graphs.builders._contiguous_ranges(first, (node + radius).clamp(max=num_nodes - 1) - first + 1)


def graph_cases(seed: int = 0) -> dict[str, GraphCase]:
    """Small graphs of every kind, a few tiles of 16 x 16 each (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    lengths, tgt_lengths = [21, 3, 30], [9, 17, 1]
    keep = torch.rand(45, 40, generator=generator) < 0.15  # (T, S) random graph
    keep[[4, 30]] = False  # two targets without edges
    target, source = keep.nonzero(as_tuple=True)
    shuffle = torch.randperm(target.numel(), generator=generator)
    hub_sources = torch.arange(70)
    skew = torch.cat([torch.stack([hub_sources, torch.zeros(70, dtype=torch.long)]),  # node 0 hears everyone
                      torch.stack([torch.arange(1, 60), torch.arange(2, 61)])], 1)  # others: one edge, 61.. none
    return {
        "complete": GraphCase(graphs.complete(lengths), 54, 54),
        "causal": GraphCase(graphs.causal(lengths), 54, 54),
        "bipartite": GraphCase(graphs.bipartite(lengths, tgt_lengths), 54, 27),
        "window": GraphCase(window_graph(50, 4), 50, 50),
        "random": GraphCase(torch.stack([source, target])[:, shuffle], 40, 45),
        "skewed": GraphCase(skew, 70, 70),
    }


def compare_backend(backend: str, case: GraphCase, *, num_heads: int = 2, head_dim: int = 16,
                    value_dim: int | None = None, dtype: torch.dtype = torch.float32, bias: str | None = "per_head",
                    blocked: float = 0.1, dropout_p: float = 0.0, prepare: dict | None = None,
                    device: str | torch.device = "cpu", seed: int = 0) -> dict[str, float]:
    """Relative differences of ``backend`` from the reference path: out, weights, grad_q, grad_k, grad_v, grad_bias.

    Args:
        backend: the backend under test.
        case: the graph.
        num_heads, head_dim, value_dim: sizes of q, k (head_dim) and v (value_dim, default head_dim).
        dtype: dtype the backend runs in; the reference runs in float64 on the same values.
        bias: ``"per_head"`` (num_edges, H), ``"shared"`` (num_edges, 1) or ``None``.
        blocked: fraction of bias entries set to ``-inf`` (the edge removed for that head).
        dropout_p: attention dropout; the reference then runs on the weights the backend
            returns (after dropout), so dropout is checked for self-consistency: the output
            and every gradient must follow from the edges the backend kept.
        prepare: keyword arguments of :class:`PreparedGraph` (e.g. ``block_size``).
        device: where both run.

    Returns:
        ``{"out", "weights", "grad_q", "grad_k", "grad_v", "grad_bias": relative difference,
        "weights_detached": 1.0 if the returned weights carry no autograd graph}``.
    """
    generator = torch.Generator().manual_seed(seed)
    value_dim = head_dim if value_dim is None else value_dim

    def draw(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    inputs = [draw(case.num_targets, num_heads, head_dim), draw(case.num_sources, num_heads, head_dim),
              draw(case.num_sources, num_heads, value_dim)]
    if bias is not None:
        values = draw(case.edge_index.size(1), num_heads if bias == "per_head" else 1)
        values[(torch.rand(values.shape, generator=generator) < blocked).to(device)] = float("-inf")
        inputs.append(values)
    edge_index = case.edge_index.to(device)
    graph = PreparedGraph(edge_index, case.num_sources, case.num_targets, **(prepare or {}))
    fast = [t.clone().requires_grad_() for t in inputs]
    out, weights = graph_attention(*fast[:3], graph, *fast[3:], backend=backend, dropout_p=dropout_p,
                                   return_attention_weights=True)
    grad_out = draw(*out.shape)
    fast_grads = torch.autograd.grad(out, fast, grad_out)
    exact = [t.double().requires_grad_() for t in inputs]
    expected, expected_weights = _reference(exact, edge_index, weights if dropout_p > 0 else None, dropout_p)
    exact_grads = torch.autograd.grad(expected, exact, grad_out.double())
    names = ["grad_q", "grad_k", "grad_v", "grad_bias"]
    report = {"out": relative_difference(out, expected), "weights": relative_difference(weights, expected_weights)}
    report.update({name: relative_difference(g, e) for name, g, e in zip(names, fast_grads, exact_grads)})
    report["weights_detached"] = float(not weights.requires_grad)
    return report


def _reference(inputs: list[Tensor], edge_index: Tensor, dropped: Tensor | None,
               dropout_p: float) -> tuple[Tensor, Tensor]:
    """Reference output and weights; with ``dropped`` weights, the edges they dropped are dropped here too."""
    out, weights = graph_attention(*inputs[:3], edge_index, *inputs[3:], return_attention_weights=True)
    if dropped is None:
        return out, weights
    weights = weights * (dropped != 0).double() / (1.0 - dropout_p)
    value = inputs[2][edge_index[0]]  # (num_edges, H, Cv)
    out = torch.zeros_like(out).index_add_(0, edge_index[1], weights[..., None] * value)
    return out, weights
