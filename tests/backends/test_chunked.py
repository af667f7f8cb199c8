import pytest
import torch

from gnn_transformer import graphs
from gnn_transformer.backends.chunked import chunked_graph_attention, plan_chunks
from gnn_transformer.core.functional import graph_attention
from gnn_transformer.backends.prepared import prepare_graph
from gnn_transformer.testing import GraphCase, compare_backend, graph_cases

from .closeness import TOLERANCE, assert_close


@pytest.fixture(autouse=True)
def chunks_always(monkeypatch):
    """The chunk path on every graph (test_segments.py and test_tiled.py check the other two)."""
    import gnn_transformer.backends.segment_plan as segment_plan
    import gnn_transformer.backends.tile_plan as tiles

    monkeypatch.setattr(segment_plan, "MAX_SEGMENT", 0)
    monkeypatch.setattr(tiles, "MAX_WASTE", 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", list(graph_cases()))
def test_matches_reference_on_every_kind_of_graph(kind, dtype):
    assert_close(compare_backend("chunked", graph_cases()[kind], dtype=dtype, value_dim=24), TOLERANCE[dtype])


@pytest.mark.parametrize("bias", ["shared", None])
def test_shared_and_missing_bias(bias):
    assert_close(compare_backend("chunked", graph_cases()["causal"], bias=bias, dtype=torch.float64), 1e-10)


@pytest.mark.parametrize("kind", ["complete", "random", "skewed"])
def test_small_chunks_give_the_same_result(kind, monkeypatch):
    """A tiny budget forces many chunks, halving of sparse blocks and gathered pieces."""
    import gnn_transformer.backends.chunked as chunked

    monkeypatch.setattr(chunked, "MAX_ELEMENTS", 600)
    assert_close(compare_backend("chunked", graph_cases()[kind], dtype=torch.float64), 1e-10)


def test_chunk_plan_covers_every_target_and_edge_once():
    for kind, case in graph_cases().items():
        graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
        chunks = plan_chunks(graph, num_heads=2, head_dim=8, max_elements=256)
        assert chunks[0].t0 == 0 and chunks[-1].t1 == case.num_targets, kind
        assert all(a.t1 == b.t0 and a.e1 == b.e0 for a, b in zip(chunks, chunks[1:])), kind
        assert chunks[-1].e1 == case.edge_index.size(1)


def test_dense_where_blocks_are_full_gather_where_sparse():
    complete = prepare_graph(graphs.complete([64] * 4), 256)
    assert all(chunk.dense for chunk in plan_chunks(complete, 2, 8, max_elements=2**12))
    ragged = prepare_graph(graphs.complete([5] * 200), 1000)  # block-diagonal: halving makes blocks dense
    assert all(chunk.dense for chunk in plan_chunks(ragged, 2, 8))
    case = graph_cases()["random"]
    sparse = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    assert not any(chunk.dense for chunk in plan_chunks(sparse, 2, 8))


def test_repeated_edges_count_twice_as_in_the_reference():
    edge_index = torch.cat([graphs.complete([6]), torch.tensor([[1, 1, 4], [2, 2, 0]])], 1)
    q, k, v = (torch.randn(6, 2, 4, dtype=torch.float64) for _ in range(3))
    expected = graph_attention(q, k, v, edge_index)
    assert torch.allclose(graph_attention(q, k, v, edge_index, backend="chunked"), expected, atol=1e-12)


def test_dropout_is_consistent_and_reproducible():
    assert_close(compare_backend("chunked", graph_cases()["window"], dropout_p=0.3), 1e-5)
    case = graph_cases()["causal"]
    graph = prepare_graph(case.edge_index, case.num_sources)
    q = torch.randn(case.num_targets, 2, 8)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(chunked_graph_attention(q, q, q, graph, None, 0.5, dropout_p=0.5)[0])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], chunked_graph_attention(q, q, q, graph, None,
                                                                                                 0.5)[0])


def test_keeps_only_inputs_output_and_log_sum_exp_for_backward():
    case = graph_cases()["random"]
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    q = torch.randn(case.num_targets, 2, 8, requires_grad=True)
    k, v = (torch.randn(case.num_sources, 2, 8, requires_grad=True) for _ in range(2))
    bias = torch.randn(case.edge_index.size(1), 2, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        chunked_graph_attention(q, k, v, graph, bias, 0.5)
    inputs = {t.data_ptr() for t in (q, k, v, bias)}
    new = [tuple(t.shape) for t in saved if t.data_ptr() not in inputs]
    assert sorted(new) == [(case.num_targets, 2), (case.num_targets, 2, 8)]  # lse and out


def test_full_blocks_without_bias_skip_the_mask():
    case = GraphCase(graphs.complete([30]), 30, 30)
    graph = prepare_graph(case.edge_index, 30)
    assert [chunk.dense for chunk in plan_chunks(graph, 2, 16)] == [True]
    assert_close(compare_backend("chunked", case, bias=None, dtype=torch.float64), 1e-10)


@pytest.mark.parametrize("kind", ["complete", "window", "random"])
def test_dropout_draws_depend_on_the_edge_not_on_the_chunk_plan(kind, monkeypatch):
    import gnn_transformer.backends.chunked as chunked

    case = graph_cases()[kind]
    q = torch.randn(case.num_targets, 2, 8, dtype=torch.float64)
    k, v = (torch.randn(case.num_sources, 2, 8, dtype=torch.float64) for _ in range(2))
    runs, plans = [], []
    for budget in (chunked.MAX_ELEMENTS, 200):  # one chunk; many chunks, dense and gathered
        monkeypatch.setattr(chunked, "MAX_ELEMENTS", budget)
        graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
        torch.manual_seed(5)
        runs.append(graph_attention(q, k, v, graph, backend="chunked", dropout_p=0.4, return_attention_weights=True))
        plans.append(chunked.chunk_plan(graph, 2, 8))
    assert len(plans[0]) < len(plans[1])
    (out, weights), (small_out, small_weights) = runs
    assert torch.equal(weights == 0, small_weights == 0)
    assert torch.allclose(out, small_out, atol=1e-12) and torch.allclose(weights, small_weights, atol=1e-12)
    dropped = (weights == 0).double().mean().item()  # softmax weights are never 0 without dropout here
    assert abs(dropped - 0.4) < 4 * (0.4 * 0.6 / weights.numel()) ** 0.5, dropped  # within 4 standard deviations
