"""The tile path of the chunked backend (backends/tile_plan.py, tiled.py) against the reference path."""
import pytest
import torch

import gnn_transformer.backends.segment_plan as segment_plan
import gnn_transformer.backends.tile_plan as tiles
from gnn_transformer import graphs
from gnn_transformer.backends.chunked import chunked_graph_attention
from gnn_transformer.backends.prepared import prepare_graph
from gnn_transformer.core.functional import graph_attention
from gnn_transformer.testing import GraphCase, compare_backend, graph_cases
from gnn_transformer.testing.backends import window_graph

from .closeness import TOLERANCE, assert_close



@pytest.fixture
def tiles_always(monkeypatch):
    """Every graph without repeated edges on tiles, 16 x 16, in groups of at most 3 tiles (2 heads); no segments."""
    monkeypatch.setattr(segment_plan, "MAX_SEGMENT", 0)
    monkeypatch.setattr(tiles, "MAX_WASTE", float("inf"))
    monkeypatch.setattr(tiles, "BLOCK_SIZES", (16,))
    monkeypatch.setattr(tiles, "MAX_ELEMENTS", 3 * 2 * 16 * 16)


def plan_of(case: GraphCase, num_heads: int = 2, head_dim: int = 16):
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    return tiles.tile_plan(graph, num_heads, head_dim)


@pytest.mark.parametrize("kind", list(graph_cases()))
def test_tiles_counted_in_one_pass_equal_tiles_counted_by_sorting(kind, tiles_always, monkeypatch):
    """Planning counts tiles with bincount on small planes and with unique beyond: the same counts, the same plan."""
    case = graph_cases()[kind]
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    source, target = graph.edge_index

    def counts_and_plan():
        return [tiles._tile_counts(target, source, block, graph) for block in (1, 2, 3, 16)], plan_of(case)

    counted, counted_plan = counts_and_plan()
    monkeypatch.setattr(tiles, "DENSE_COUNT_BINS", 0)
    monkeypatch.setattr(tiles, "DENSE_COUNT_PER_EDGE", 0)  # every plane is larger: unique
    by_sorting, sorted_plan = counts_and_plan()
    for one_pass, sort in zip(counted, by_sorting):
        assert all(torch.equal(a, b) for a, b in zip(one_pass, sort))  # edge keys, tiles, counts
    for name in ("tile_row", "tile_col"):
        assert torch.equal(getattr(counted_plan, name), getattr(sorted_plan, name))
    for a, b in zip(counted_plan.groups, sorted_plan.groups, strict=True):
        assert torch.equal(a.edge_ids, b.edge_ids) and torch.equal(a.edge_slots, b.edge_slots)
        assert (a.mask is None) == (b.mask is None) and (a.mask is None or torch.equal(a.mask, b.mask))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", list(graph_cases()))
def test_tiles_match_reference_on_every_kind_of_graph(kind, dtype, tiles_always):
    plan = plan_of(graph_cases()[kind])
    assert plan is not None and len(plan.groups) > 1 and plan.num_tiles > 1  # several groups, merged rows
    assert_close(compare_backend("chunked", graph_cases()[kind], dtype=dtype, value_dim=24), TOLERANCE[dtype])


@pytest.mark.parametrize("bias", ["shared", None])
@pytest.mark.parametrize("kind", ["causal", "bipartite", "skewed"])
def test_tiles_with_a_shared_or_no_bias(kind, bias, tiles_always):
    assert_close(compare_backend("chunked", graph_cases()[kind], bias=bias, dtype=torch.float64), 1e-10)


@pytest.mark.parametrize("kind", ["window", "random"])
def test_tiles_with_dropout_follow_from_the_kept_edges(kind, tiles_always):
    assert_close(compare_backend("chunked", graph_cases()[kind], dropout_p=0.3, dtype=torch.float64), 1e-10)


@pytest.mark.parametrize("lengths", [[16, 16, 16], [16, 16, 10]])
def test_one_tile_per_row_block_needs_no_merge(lengths, tiles_always):
    """Sequences of 16 on 16 x 16 tiles: one (diagonal) tile per row block; the last one partial."""
    case = GraphCase(graphs.complete(lengths), sum(lengths), sum(lengths))
    plan = plan_of(case)
    assert all(group.one_per_row and group.c0 >= 0 for group in plan.groups)
    assert (plan.groups[-1].mask is None) == (lengths[-1] == 16)
    assert_close(compare_backend("chunked", case, dtype=torch.float64), 1e-10)
    assert_close(compare_backend("chunked", case, bias=None, dtype=torch.float64), 1e-10)


def test_tile_size_follows_the_graph():
    """Entries computed plus a per-tile cost: sequences of 32 get 32 x 32 tiles, one of 128 one tile."""
    def block(edge_index, n):
        return plan_of(GraphCase(edge_index, n, n), 4, 16).block

    assert block(graphs.complete([32] * 8), 256) == 32
    assert block(graphs.complete([64] * 4), 256) == 64
    assert block(graphs.complete([128]), 128) == 128
    plan = plan_of(GraphCase(graphs.complete([32] * 8), 256, 256), 4, 16)
    assert plan.num_tiles == 8 and all(group.mask is None for group in plan.groups)  # no entry wasted


def test_dense_graphs_take_tiles_sparse_or_repeated_ones_take_chunks():
    for edge_index, n in ((graphs.complete([10, 50, 30]), 90), (graphs.causal([128]), 128), (window_graph(512, 8), 512)):
        assert plan_of(GraphCase(edge_index, n, n)) is not None
    for kind in ("random", "skewed"):  # tiles would compute more than MAX_WASTE entries per edge
        assert plan_of(graph_cases()[kind]) is None, kind
    repeated = torch.cat([graphs.complete([6]), torch.tensor([[1], [2]])], 1)
    assert plan_of(GraphCase(repeated, 6, 6)) is None  # a tile holds each pair once
    q, k, v = (torch.randn(6, 2, 4, dtype=torch.float64) for _ in range(3))
    assert torch.allclose(graph_attention(q, k, v, repeated, backend="chunked"), graph_attention(q, k, v, repeated),
                          atol=1e-12)


@pytest.mark.parametrize("kind", ["complete", "window", "bipartite"])
def test_tiles_and_chunks_drop_the_same_pairs(kind, monkeypatch):
    case = graph_cases()[kind]
    q = torch.randn(case.num_targets, 2, 8, dtype=torch.float64)
    k, v = (torch.randn(case.num_sources, 2, 8, dtype=torch.float64) for _ in range(2))
    runs = []
    for waste in (float("inf"), 0.0):  # tiles; chunks
        monkeypatch.setattr(tiles, "MAX_WASTE", waste)
        graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
        assert (tiles.tile_plan(graph, 2, 8) is None) == (waste == 0.0)
        torch.manual_seed(5)
        runs.append(graph_attention(q, k, v, graph, backend="chunked", dropout_p=0.4, return_attention_weights=True))
    (out, weights), (chunk_out, chunk_weights) = runs
    assert torch.equal(weights == 0, chunk_weights == 0) and (weights == 0).any()
    assert torch.allclose(out, chunk_out, atol=1e-12) and torch.allclose(weights, chunk_weights, atol=1e-12)


def test_keeps_nothing_per_pair_for_backward(tiles_always):
    """Saved: q, k, v, out (tile layout: rows padded to whole blocks), the log-sum-exp, the bias; nothing per pair."""
    case = graph_cases()["window"]
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    q, k, v = (torch.randn(case.num_targets, 2, 8, requires_grad=True) for _ in range(3))
    bias = torch.randn(case.edge_index.size(1), 2, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        chunked_graph_attention(q, k, v, graph, bias, 0.5)
    rows = -(-case.num_targets // 16) * 16  # 50 targets in 4 blocks of 16
    shapes = sorted(tuple(t.shape) for t in saved if t.data_ptr() != bias.data_ptr())
    assert shapes == [(4, 2, 16), *[(4, 2, 16, 8)] * 4], shapes  # lse; q, k, v, out
    assert sum(t.numel() for t in saved) < 6 * rows * 2 * 8 + bias.numel()


def test_a_row_without_edges_gets_zero_and_no_nan(tiles_always):
    """Targets 4 and 30 of the random graph have no edge; a bias of -inf removes every edge of target 7."""
    case = graph_cases()["random"]
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    q = torch.randn(case.num_targets, 2, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(case.num_sources, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    bias = torch.zeros(case.edge_index.size(1), 2, dtype=torch.float64)
    bias[case.edge_index[1] == 7] = float("-inf")
    out, weights = chunked_graph_attention(q, k, v, graph, bias, 0.5, need_weights=True)
    out.sum().backward()
    assert torch.equal(out[[4, 7, 30]], torch.zeros(3, 2, 8, dtype=torch.float64))
    assert all(torch.isfinite(t).all() for t in (out, weights, q.grad, k.grad, v.grad))
