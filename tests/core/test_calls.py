"""Graphs prepared (and checked) once at the outermost call, trusted inside without host syncs."""
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import gnn_transformer.core.dense as dense
from gnn_transformer import (GraphMultiheadAttention, GraphTransformer, GraphTransformerEncoder,
                             GraphTransformerEncoderLayer, graphs)
from gnn_transformer.backends.prepared import PreparedGraph
from gnn_transformer.core.attention import KeyValueCache
from gnn_transformer.core.calls import is_graph_call, prepare_edges, source_count
from gnn_transformer.core.dense import DenseLayout, MaskGraph, mask_graph

DT = torch.float64
SYNCS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")


@contextmanager
def no_host_sync():
    """Fail on any Python-level read of a tensor's value (``.item()``, ``int(t)``, ``bool(t)``, ...)."""
    saved = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def forbidden(name):
        def call(*args, **kwargs):
            raise AssertionError(f"host synchronisation: Tensor.{name}")
        return call

    for name in SYNCS:
        setattr(torch.Tensor, name, forbidden(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def edge_arguments(module: nn.Module, names=("edge_index", "cross_edge_index")) -> dict:
    """Install pre-hooks on every submodule; returns {qualified name: {argument: value}} as they are called."""
    seen = {}
    for qualified, sub in module.named_modules():
        def hook(_, args, kwargs, qualified=qualified):
            seen[qualified] = {name: kwargs[name] for name in names if name in kwargs}
        sub.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_no_host_sync_catches_a_sync():
    with pytest.raises(AssertionError, match="Tensor.item"), no_host_sync():
        torch.ones(1).item()
    with pytest.raises(AssertionError, match="Tensor.__bool__"), no_host_sync():
        bool(torch.ones(1))


def test_is_graph_call_and_source_count():
    x, edges = torch.randn(3, 8), graphs.complete([3])
    assert is_graph_call((x, edges), {}, 1, "edge_index") and is_graph_call((x,), {"edge_index": None}, 1,
                                                                           "edge_index")
    assert not is_graph_call((x, torch.zeros(3, 3, dtype=torch.bool)), {}, 1, "edge_index")
    assert not is_graph_call((x, torch.zeros(3, 3)), {}, 1, "edge_index") and not is_graph_call((x,), {}, 1, "e")
    cache, static = KeyValueCache(), KeyValueCache(static=True)
    assert source_count(None, 3) == source_count(cache, 3) == source_count(static, 3) == 3
    cache.append(torch.randn(4, 2, 4), torch.randn(4, 2, 4))
    static.append(torch.randn(5, 2, 4), torch.randn(5, 2, 4))
    assert source_count(cache, 3) == 7 and source_count(static, 0) == 5


def test_prepare_edges_checks_once_and_passes_prepared_graphs_through():
    edges = graphs.complete([2, 3])
    prepared = prepare_edges(edges, 5, 5)
    assert isinstance(prepared, PreparedGraph) and (prepared.num_sources, prepared.num_targets) == (5, 5)
    assert prepare_edges(prepared, 5, 5) is prepared and prepare_edges(None, 5, 5) is None
    memo = {}
    assert prepare_edges(edges, 5, 5, memo=memo) is prepare_edges(edges, 5, 5, memo=memo)
    assert prepare_edges(edges, 6, 5, memo=memo) is not prepare_edges(edges, 5, 5, memo=memo)
    with pytest.raises(ValueError, match="refers to source node 4 but only 4 source tokens"):
        prepare_edges(edges, 4, 5)


def test_a_stack_prepares_each_distinct_edge_set_once_and_hands_it_down():
    encoder = GraphTransformerEncoder(GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=DT), 3).eval()
    seen = edge_arguments(encoder)
    x, local, full = torch.randn(5, 8, dtype=DT), graphs.causal([2, 3], window=1), graphs.complete([2, 3])
    encoder(x, [local, full, local])
    graph = [seen[f"layers.{i}.self_attn"]["edge_index"] for i in range(3)]
    assert all(isinstance(g, PreparedGraph) for g in graph)
    assert graph[0] is graph[2] and graph[0] is not graph[1] and graph[1].edge_index.equal(full)
    assert seen["layers.1"]["edge_index"] is graph[1]  # the layer gets the prepared graph too
    encoder(x, full)
    assert seen["layers.0.self_attn"]["edge_index"] is seen["layers.2.self_attn"]["edge_index"]


def test_the_model_prepares_cross_edges_for_the_memory():
    model = GraphTransformer(8, 2, 1, 2, 16, dropout=0.0, dtype=DT).eval()
    seen = edge_arguments(model)
    src, tgt = torch.randn(5, 8, dtype=DT), torch.randn(3, 8, dtype=DT)
    model(src, tgt, graphs.complete([3, 2]), graphs.causal([2, 1]), graphs.bipartite([3, 2], [2, 1]))
    cross = seen["decoder.layers.1.multihead_attn"]["edge_index"]
    assert (cross.num_sources, cross.num_targets) == (5, 3)
    assert cross is seen["decoder.layers.0.multihead_attn"]["edge_index"] is seen["decoder.layers.0"][
        "cross_edge_index"]


def test_a_stack_with_a_cache_prepares_for_the_cached_sources():
    """Incremental decoding: the new nodes' edges index every cached node; the result is the full run's."""
    encoder = GraphTransformerEncoder(GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=DT), 2).eval()
    x = torch.randn(5, 8, dtype=DT)
    full = encoder(x, graphs.causal([5]))
    cache = [KeyValueCache() for _ in range(2)]
    seen = edge_arguments(encoder)
    first = encoder(x[:3], graphs.causal([3]), cache=cache)
    later = graphs.causal([5])
    later = later[:, later[1] >= 3] - torch.tensor([[0], [3]])  # targets 3, 4 as new nodes 0, 1 over 5 sources
    second = encoder(x[3:], later, cache=cache)
    graph = seen["layers.1.self_attn"]["edge_index"]
    assert (graph.num_sources, graph.num_targets) == (5, 2) and graph is seen["layers.0.self_attn"]["edge_index"]
    torch.testing.assert_close(torch.cat([first, second]), full, rtol=0, atol=1e-12)


def test_masks_are_converted_once_per_stack_call(monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return edges_from_mask(*args, **kwargs)

    edges_from_mask = dense.edges_from_mask
    monkeypatch.setattr(dense, "edges_from_mask", counting)
    model = GraphTransformer(8, 2, 3, 3, 16, dropout=0.0, dtype=DT).eval()
    seen = {}
    for name, sub in model.named_modules():
        if isinstance(sub, GraphMultiheadAttention):
            sub.register_forward_pre_hook(lambda m, a, kw, name=name: seen.__setitem__(name, kw["graph"]),
                                          with_kwargs=True)
    src, tgt = torch.randn(4, 2, 8, dtype=DT), torch.randn(3, 2, 8, dtype=DT)
    model(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(3, dtype=DT),
          src_key_padding_mask=graphs.padding_mask([4, 2], 4))
    assert len(calls) == 3  # encoder self, decoder self, cross: not once per layer
    assert len({id(seen[f"encoder.layers.{i}.self_attn"]) for i in range(3)}) == 1
    assert len({id(seen[f"decoder.layers.{i}.multihead_attn"]) for i in range(3)}) == 1
    assert all(isinstance(graph, MaskGraph) for graph in seen.values())


def test_trusted_calls_do_not_synchronise_with_the_host():
    """Given prepared graphs (or a converted mask graph), attention, layers and stacks never read a tensor's
    value on the host (reference backend)."""
    model = GraphTransformer(8, 2, 2, 2, 16, dropout=0.0, dtype=DT).eval()
    src, tgt = torch.randn(5, 8, dtype=DT), torch.randn(4, 8, dtype=DT)
    graph = (PreparedGraph(graphs.complete([3, 2]), 5), PreparedGraph(graphs.causal([2, 2]), 4),
             PreparedGraph(graphs.bipartite([3, 2], [2, 2]), 5, 4))
    attention = GraphMultiheadAttention(8, 2, add_bias_kv=True, add_zero_attn=True, dtype=DT).eval()
    layer = model.encoder.layers[0]
    padded = torch.randn(3, 2, 8, dtype=DT)
    layout = DenseLayout.of(padded, False, "src")
    masks = mask_graph(None, graphs.padding_mask([3, 1], 3), tgt=layout, src=layout, num_heads=2, is_causal=False,
                       dtype=DT)
    with no_host_sync():
        out, weights = model(src, tgt, *graph, return_attention_weights=True)
        attention(tgt, src, src, graph[2], return_attention_weights=True)
        layer(padded, graph=masks)
    assert out.shape == (4, 8) and len(weights["decoder"]) == 2


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_a_plain_edge_index_costs_its_host_reads_once_per_stack_call_not_once_per_layer(backend):
    """The outermost call checks and prepares the graph for its backend (its host reads); the layers
    then read nothing, so three layers cost what one layer costs."""
    from gnn_transformer.testing import count_host_syncs

    def reads(num_layers: int) -> int:
        layer = GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=DT, backend=backend)
        stack = GraphTransformerEncoder(layer, num_layers).eval()
        x, edges = torch.randn(5, 8, dtype=DT), graphs.complete([3, 2])  # a fresh, plain edge index
        with count_host_syncs() as syncs:
            stack(x, edges)
        return syncs.count

    assert reads(1) > 0  # checking the edge index reads it back
    assert reads(3) == reads(1)
