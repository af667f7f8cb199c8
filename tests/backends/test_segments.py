"""The segment path of the chunked backend (backends/segment_plan.py, segments.py) against the reference path."""
import pytest
import torch

import gnn_transformer.backends.segment_plan as plans
import gnn_transformer.backends.segments as segments
from gnn_transformer import graphs
from gnn_transformer.backends.chunked import chunked_graph_attention
from gnn_transformer.backends.prepared import prepare_graph
from gnn_transformer.backends.tile_plan import tile_plan
from gnn_transformer.testing import GraphCase, compare_backend, graph_cases
from gnn_transformer.testing.backends import window_graph

from .closeness import TOLERANCE, assert_close



@pytest.fixture
def segments_always(monkeypatch):
    """Every graph without repeated edges on segments, whatever they waste or the tiles would cost."""
    monkeypatch.setattr(plans, "MAX_WASTE", float("inf"))
    monkeypatch.setattr(plans, "GROUP_COST", -10**12)


def plan_of(case: GraphCase, num_heads: int = 2, head_dim: int = 16):
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    return plans.segment_plan(graph, num_heads, head_dim)


def test_segments_are_found_from_the_edges_alone():
    case = GraphCase(graphs.bipartite([3, 5, 2], [4, 1, 6]), 10, 11)  # sources 3, 5, 2; targets 4, 1, 6
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    edge_segment, first, lengths, source_first, widths = plans.find_segments(graph)
    assert first.tolist() == [0, 4, 5] and lengths.tolist() == [4, 1, 6]
    assert source_first.tolist() == [0, 3, 8] and widths.tolist() == [3, 5, 2]
    target = graph.edge_index[1]
    assert torch.equal(edge_segment, torch.bucketize(target, torch.tensor([4, 5]), right=True))


def test_a_target_without_edges_is_a_segment_without_sources():
    edge_index = torch.tensor([[0, 1, 0, 1, 3], [0, 0, 1, 1, 3]])  # target 2 hears nobody
    graph = prepare_graph(edge_index, 4, 4)
    _, first, lengths, _, widths = plans.find_segments(graph)
    assert first.tolist() == [0, 2, 3] and lengths.tolist() == [2, 1, 1] and widths.tolist() == [2, 0, 1]


def test_a_window_is_one_segment_and_left_to_the_tiles():
    graph = prepare_graph(window_graph(1024, 16), 1024, 1024)
    assert plans.find_segments(graph)[1].tolist() == [0]
    assert plans.segment_plan(graph, 4, 16) is None  # longer than MAX_SEGMENT
    assert tile_plan(graph, 4, 16) is not None


def test_a_ragged_batch_takes_segments_by_default_and_wastes_little():
    lengths = torch.randint(10, 51, (32,), generator=torch.Generator().manual_seed(0))
    graph = prepare_graph(graphs.complete(lengths), int(lengths.sum()))
    plan = plans.segment_plan(graph, 4, 16)
    assert plan is not None and len(plan.groups) <= plans.MAX_GROUPS
    assert plan.entries <= 1.5 * graph.num_edges  # 32 x 32 tiles: 2.6 entries per edge, padding to 50: 2.4


def test_many_lengths_grow_the_granule_to_at_most_max_groups():
    lengths = torch.arange(1, 121)  # 120 lengths: 15 padded sizes of 8, 8 of 16
    graph = prepare_graph(graphs.causal(lengths), int(lengths.sum()))
    plan = plans.plan_segments(graph, 2)
    assert len(plan.groups) <= plans.MAX_GROUPS
    assert {g.rows for g in plan.groups} == {16 * k for k in range(1, 9)}
    assert all(g.span is None for g in plan.groups)  # padded: rows gathered


def test_equal_sequences_are_one_unpadded_group_in_the_batch_layout():
    case = GraphCase(graphs.bipartite([8] * 3, [5] * 3), 24, 15)
    plan = plan_of(case)
    assert [(g.rows, g.cols, g.span) for g in plan.groups] == [(5, 8, (0, 0))] and plan.covering
    assert plan.entries == case.edge_index.size(1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", list(graph_cases()))
def test_segments_match_reference_on_every_kind_of_graph(kind, dtype, segments_always):
    assert plan_of(graph_cases()[kind]) is not None
    assert_close(compare_backend("chunked", graph_cases()[kind], dtype=dtype, value_dim=24), TOLERANCE[dtype])


@pytest.mark.parametrize("bias", ["shared", None])
@pytest.mark.parametrize("kind", ["causal", "bipartite", "skewed"])
def test_segments_with_a_shared_or_no_bias(kind, bias, segments_always):
    assert_close(compare_backend("chunked", graph_cases()[kind], bias=bias, dtype=torch.float64), 1e-10)


@pytest.mark.parametrize("kind", ["complete", "bipartite"])
def test_segments_with_dropout_follow_from_the_kept_edges(kind, segments_always):
    assert_close(compare_backend("chunked", graph_cases()[kind], dropout_p=0.3, dtype=torch.float64), 1e-10)


def test_segments_drop_the_pairs_the_tiles_drop(monkeypatch):
    """The same (seed, target, source, head) keys: both paths keep the same edges."""
    case = graph_cases()["complete"]
    kept = {}
    for path in ("segments", "tiles"):
        with monkeypatch.context() as patch:
            if path == "segments":
                patch.setattr(plans, "GROUP_COST", -10**12)
            else:
                patch.setattr(plans, "MAX_SEGMENT", 0)
            graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
            assert (plans.segment_plan(graph, 2, 16) is not None) == (path == "segments")
            q = k = v = torch.ones(case.num_targets, 2, 16, dtype=torch.float64)
            torch.manual_seed(5)
            _, weights = chunked_graph_attention(q, k, v, graph, None, 0.25, dropout_p=0.5, need_weights=True)
            kept[path] = weights != 0
    assert torch.equal(kept["segments"], kept["tiles"]) and 0.3 < kept["tiles"].double().mean() < 0.7


UNIFORM = {"complete 3 x 16": GraphCase(graphs.complete([16] * 3), 48, 48),
           "causal 4 x 8": GraphCase(graphs.causal([8] * 4), 32, 32),
           "bipartite 3 x (8 -> 5)": GraphCase(graphs.bipartite([8] * 3, [5] * 3), 24, 15)}
RAGGED = {"causal 1..20": GraphCase(graphs.causal(torch.arange(1, 21)), 210, 210),  # more lengths than groups
          "bipartite 1..12 -> 12..1": GraphCase(graphs.bipartite(torch.arange(1, 13), torch.arange(12, 0, -1)), 78, 78)}


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls of torch's fused CPU attention kernel, forward and backward."""
    calls = {"forward": 0, "backward": 0}
    forward, backward = segments._FLASH, segments._FLASH_BACKWARD

    def counted(name, op):
        def call(*args, **kwargs):
            calls[name] += 1
            return op(*args, **kwargs)
        return call
    monkeypatch.setattr(segments, "_FLASH", counted("forward", forward))
    monkeypatch.setattr(segments, "_FLASH_BACKWARD", counted("backward", backward))
    return calls


@pytest.mark.skipif(not segments.KERNEL_AVAILABLE, reason="this torch has no fused CPU kernel with a mask")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", [*graph_cases(), *UNIFORM, *RAGGED])
def test_the_fused_kernel_on_segments_matches_reference(kind, dtype, segments_always, kernel_calls):
    """No bias, no dropout, one head size: the groups run on torch's fused CPU kernel (padded groups
    gathered with their mask, back-to-back groups as views, a batch of equal sequences in its own layout)."""
    case = {**graph_cases(), **UNIFORM, **RAGGED}[kind]
    plan = plan_of(case)
    assert plan.covering or kind not in UNIFORM
    assert plan.padded or kind not in RAGGED
    assert_close(compare_backend("chunked", case, bias=None, dtype=dtype), TOLERANCE[dtype])
    assert kernel_calls["forward"] >= len(plan.groups) and kernel_calls["backward"] >= len(plan.groups)


def test_bias_dropout_or_two_head_sizes_keep_the_tile_math(kernel_calls, segments_always):
    case = UNIFORM["complete 3 x 16"]
    for options in (dict(bias="shared"), dict(bias=None, dropout_p=0.2), dict(bias=None, value_dim=24)):
        assert_close(compare_backend("chunked", case, dtype=torch.float64, **options), 1e-10)
    assert kernel_calls == {"forward": 0, "backward": 0}


def test_causal_segments_are_recognised_and_nothing_else():
    """A causal group runs on the kernel's own causal mask, so only exactly the pairs j <= i may be one."""
    for case, causal in ((UNIFORM["causal 4 x 8"], True), (RAGGED["causal 1..20"], True),
                         (UNIFORM["complete 3 x 16"], False), (graph_cases()["bipartite"], False)):
        assert all(g.causal == causal for g in plan_of(case).groups)
    lengths = [8, 8]
    edge_index = graphs.causal(lengths)
    keep = torch.ones(edge_index.size(1), dtype=torch.bool)
    keep[5] = False  # one pair fewer than causal
    assert not any(g.causal for g in plan_of(GraphCase(edge_index[:, keep], 16, 16)).groups)
