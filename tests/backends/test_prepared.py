import pytest
import torch
from torch_geometric.data import Data

import gnn_transformer as gt
from gnn_transformer import graphs, prepared
from gnn_transformer.core.attention import GraphMultiheadAttention
from gnn_transformer.core.functional import graph_attention
from gnn_transformer.backends.prepared import PreparedGraph, prepare_graph
from gnn_transformer.testing import graph_cases, relative_difference


def test_csr_of_a_graph_checkable_by_eye():
    # user order: e0 = 2 -> 1, e1 = 0 -> 1, e2 = 1 -> 0, e3 = 0 -> 0; target 2 receives nothing
    graph = prepare_graph(torch.tensor([[2, 0, 1, 0], [1, 1, 0, 0]]), 3)
    assert graph.csr.ptr.tolist() == [0, 2, 4, 4]
    assert graph.csr.col.tolist() == [0, 1, 0, 2]
    assert graph.csr.perm.tolist() == [3, 2, 1, 0]
    assert not graph.csr.has_duplicates


def test_sorted_edges_need_no_permutation_and_no_copy():
    edge_index = graphs.causal([5, 3])
    graph = prepare_graph(edge_index, 8, layouts=("csr",))
    assert graph.csr.perm is None and graph.csr.col.data_ptr() == edge_index[0].data_ptr()
    assert graph.structure_bytes() == 9 * 8  # ptr only


def test_tiles_of_a_causal_graph_checkable_by_eye():
    tiles = prepare_graph(graphs.causal([20]), 20, block_size=16).tiles
    # (row block, column block): (0, 0) lower triangle, (1, 0) full 4 x 16, (1, 1) lower triangle of 4 x 4
    assert list(zip(tiles.tile_row.tolist(), tiles.tile_col.tolist())) == [(0, 0), (1, 0), (1, 1)]
    assert tiles.tile_mask.tolist() == [0, -1, 1] and tiles.num_partial == 2
    assert tiles.masks[0, :4, 0].tolist() == [0b1, 0b11, 0b111, 0b1111]
    assert tiles.row_ptr.tolist() == [0, 1, 3] and tiles.row_order.tolist() == [1, 0]  # longest first
    assert tiles.col_ptr.tolist() == [0, 2, 3] and tiles.col_tiles.tolist() == [0, 1, 2]


def decode_tiles(graph: PreparedGraph) -> torch.Tensor:
    """The user's edge index rebuilt from the tile layout alone (user edge id -> (source, target))."""
    tiles = graph.tiles
    edges = torch.full((2, graph.num_edges), -1, dtype=torch.long)
    for t in range(tiles.num_tiles):
        rows = tiles.tile_row[t] * tiles.block_m + torch.arange(tiles.block_m)
        cols = tiles.tile_col[t] * tiles.block_n + torch.arange(tiles.block_n)
        inside = (rows < graph.num_targets)[:, None] & (cols < graph.num_sources)[None, :]
        if tiles.tile_mask[t] >= 0:
            words = tiles.masks[tiles.tile_mask[t]].long() & 0xFFFFFFFF  # (block_m, words per row)
            local = torch.arange(tiles.block_n)
            inside &= ((words[:, local // tiles.bits] >> (local % tiles.bits)) & 1).bool()
        target, source = rows[:, None].expand_as(inside)[inside], cols[None, :].expand_as(inside)[inside]
        position = tiles.tile_offset[t] + torch.arange(target.numel())  # row-major inside the tile
        ids = position if graph.tile_edge_ids is None else graph.tile_edge_ids[position].long()
        edges[:, ids] = torch.stack([source, target])
    return edges


@pytest.mark.parametrize("block_size", [16, (32, 16), (16, 64)])
@pytest.mark.parametrize("kind", list(graph_cases()))
def test_tiles_hold_exactly_the_users_edges(kind, block_size):
    case = graph_cases()[kind]
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets, block_size=block_size)
    assert torch.equal(decode_tiles(graph), case.edge_index)
    counts = torch.diff(graph.tiles.row_ptr.long())
    assert counts[graph.tiles.row_order.long()].tolist() == sorted(counts.tolist(), reverse=True)


def test_layouts_are_built_once_timed_and_counted():
    graph = prepare_graph(graphs.complete([40]), 40, block_size=16, layouts=("csr", "tiles"))
    assert set(graph.timings_ms) == {"csr", "tiles"} and all(ms >= 0 for ms in graph.timings_ms.values())
    before = graph.structure_bytes()
    assert before < 0.5 * graph.num_edges  # the permutation to the user's order is built only when needed
    assert graph.tile_edge_ids.dtype == torch.int32 and graph.structure_bytes() == before + 4 * graph.num_edges
    assert "tile_edge_ids" in graph.timings_ms
    tiles = graph.tiles
    assert graph.tiles is tiles and tiles.num_partial == 0  # 40 x 40: full tiles (boundary ones too)
    assert 0 < graph.structure_bytes() < 40 * 40 * 8
    assert "built=['csr', 'tiles']" in repr(graph)


def test_duplicates_are_detected_by_both_layouts():
    edge_index = torch.tensor([[0, 1, 1], [0, 0, 0]])
    assert prepare_graph(edge_index, 2).csr.has_duplicates
    assert prepare_graph(edge_index, 2, block_size=16).tiles.has_duplicates
    assert not prepare_graph(graphs.complete([3]), 3).has_duplicates


def test_bad_input_names_the_problem():
    edge_index = graphs.complete([4])
    with pytest.raises(ValueError, match="powers of two >= 16"):
        prepare_graph(edge_index, 4, block_size=(16, 24))
    with pytest.raises(ValueError, match="refers to source node 3 but only 3 source tokens"):
        prepare_graph(edge_index, 3)
    with pytest.raises(ValueError, match="unknown layout 'dense'"):
        prepare_graph(edge_index, 4, layouts=("dense",))
    graph = prepare_graph(edge_index, 4)
    q = torch.randn(5, 2, 8)
    with pytest.raises(ValueError, match="PreparedGraph for 4 source and 4 target nodes, but this call has "
                                         "5 source and 5 target nodes: prepare the graph"):
        graph_attention(q, q, q, graph, backend="chunked")
    meta = torch.randn(4, 2, 8, device="meta")
    with pytest.raises(ValueError, match="the graph is on cpu but q, k, v are on meta"):
        graph_attention(meta, meta, meta, graph)


def test_every_backend_accepts_a_prepared_graph():
    case = graph_cases()["random"]
    graph = prepare_graph(case.edge_index, case.num_sources, case.num_targets)
    q = torch.randn(case.num_targets, 2, 8, dtype=torch.float64)
    k, v = torch.randn(2, case.num_sources, 2, 8, dtype=torch.float64)
    expected = graph_attention(q, k, v, case.edge_index)
    for backend in ("reference", "chunked", "auto"):
        assert relative_difference(graph_attention(q, k, v, graph, backend=backend), expected) < 1e-12


def count_preparations(monkeypatch) -> list:
    built = []
    original = prepared.build_csr
    monkeypatch.setattr(prepared, "build_csr", lambda *args: built.append(1) or original(*args))
    return built


def test_a_stack_prepares_a_plain_edge_index_once_for_all_layers(monkeypatch):
    built = count_preparations(monkeypatch)
    layer = gt.GraphTransformerEncoderLayer(16, 2, 32, dropout=0.0, backend="chunked")
    stack = gt.GraphTransformerEncoder(layer, num_layers=3)
    x, edge_index = torch.randn(9, 16), graphs.complete([4, 5])
    out = stack(x, edge_index)
    assert len(built) == 1
    stack(x, [edge_index, edge_index, graphs.causal([4, 5])])
    assert len(built) == 3  # two distinct graphs
    graph = prepare_graph(edge_index, 9)
    assert torch.allclose(stack(x, graph), out)
    stack(x, graph)
    assert len(built) == 4  # the prepared graph built its layout once, then every layer and call reused it


def test_models_take_a_prepared_graph_in_their_data():
    reference = gt.GraphEncoderModel(30, d_model=16, nhead=2, num_layers=2, dim_feedforward=32).eval()
    fast = gt.GraphEncoderModel(30, d_model=16, nhead=2, num_layers=2, dim_feedforward=32, backend="chunked").eval()
    fast.load_state_dict(reference.state_dict())
    lengths = torch.tensor([3, 6])
    data = Data(x=torch.randint(0, 30, (9,)), position=graphs.positions(lengths), edge_index=graphs.complete(lengths))
    expected = reference(data)
    data.edge_index = prepare_graph(data.edge_index, 9)
    assert relative_difference(fast(data), expected) < 1e-5
    assert relative_difference(reference(data), expected) == 0.0


def test_virtual_sources_are_prepared_once_per_graph():
    torch.manual_seed(0)
    kwargs = dict(add_bias_kv=True, add_zero_attn=True, dtype=torch.float64)
    reference = GraphMultiheadAttention(8, 2, **kwargs)
    fast = GraphMultiheadAttention(8, 2, backend="chunked", **kwargs)
    fast.load_state_dict(reference.state_dict())
    x, edge_index = torch.randn(6, 8, dtype=torch.float64), graphs.causal([2, 4])
    bias = torch.randn(edge_index.size(1), 2, dtype=torch.float64)
    graph = prepare_graph(edge_index, 6)
    expected, expected_weights = reference(x, x, x, edge_index, bias, return_attention_weights=True)
    for _ in range(2):
        out, weights = fast(x, x, x, graph, bias, return_attention_weights=True)
        assert relative_difference(out, expected) < 1e-12
        assert relative_difference(weights, expected_weights) < 1e-12
    assert [key for key in graph._derived if key[0] == "virtual_sources"] == [("virtual_sources", 2)]


def test_encoder_decoder_prepares_each_of_its_three_graphs_once(monkeypatch):
    torch.manual_seed(0)
    options = dict(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=32, dropout=0.0)
    reference = gt.GraphTransformer(**options)
    fast = gt.GraphTransformer(**options, backend="chunked")
    fast.load_state_dict(reference.state_dict())
    src_lengths, tgt_lengths = [4, 2], [3, 5]
    args = (torch.randn(6, 16), torch.randn(8, 16), graphs.complete(src_lengths), graphs.causal(tgt_lengths),
            graphs.bipartite(src_lengths, tgt_lengths))
    built = count_preparations(monkeypatch)
    assert relative_difference(fast(*args), reference(*args)) < 1e-5
    assert len(built) == 3


def test_a_graph_prepared_for_a_backend_holds_what_it_needs(monkeypatch):
    built = count_preparations(monkeypatch)
    edge_index = graphs.causal([5, 3])
    cheap = prepare_graph(edge_index, 8, backend="reference")
    assert cheap._csr is None and cheap._tiles is None and not cheap._derived and built == []
    batch = prepare_graph(edge_index, 8, backend="chunked", num_heads=2, head_dim=8)
    assert [key[0] for key in batch._derived] == ["segments"]  # two sequences: a segment each
    sparse = torch.tensor([[0, 7, 3, 1], [5, 1, 6, 0]])  # one segment of 8 x 8 for 4 edges, sparse tiles
    graph = prepare_graph(sparse, 8, backend="chunked", num_heads=2, head_dim=8)
    plans = [key[0] for key in graph._derived]  # too sparse for segments and tiles: both say so, then chunks
    assert graph._csr is not None and plans == ["segments", "tiles", "chunks"] and graph._tiles is None
    assert graph.prepare("chunked", 2, 8) is graph and len(built) == 2  # idempotent: nothing rebuilt
    graph.prepare("chunked", 4, 4)
    assert [key for key in graph._derived if key[0] == "chunks"] == [("chunks", 2, 8), ("chunks", 4, 4)]
    assert len(built) == 2
    assert "prepared_for=['chunked']" in repr(graph)
    tiled = prepare_graph(graphs.complete([40]), 40, backend="fused", block_size=16)
    assert tiled._tiles is not None and tiled._tile_edge_ids is not None


def test_preparing_for_a_backend_names_bad_arguments():
    edge_index = graphs.complete([4])
    with pytest.raises(ValueError, match="cannot prepare a graph for backend 'dense'; known: "):
        prepare_graph(edge_index, 4, backend="dense")
    with pytest.raises(ValueError, match="give num_heads and head_dim together"):
        prepare_graph(edge_index, 4, backend="chunked", num_heads=2)
    with pytest.raises(ValueError, match="give backend= as well"):
        prepare_graph(edge_index, 4, num_heads=2, head_dim=8)
    with pytest.raises(ValueError, match="must be positive, got 0 and 8"):
        prepare_graph(edge_index, 4).prepare("auto", 0, 8)


def test_dependencies_inside_backends_point_one_way():
    """validation <- prepared, dropout <- reference, tile_plan <- tiled, segment_plan <- segments, fused <- chunked
    <- the dispatch; function-level imports count too."""
    import ast
    from pathlib import Path

    import gnn_transformer.backends as backends

    root = Path(backends.__file__).parent
    rank = {"validation": 0, "prepared": 1, "dropout": 1, "reference": 2, "tile_plan": 2, "tiled": 3,
            "segment_plan": 3, "segments": 4, "chunked": 5, "fused": 2, "__init__": 6}
    for path in [*root.glob("*.py"), *root.glob("fused/*.py")]:
        module = "fused" if path.parent.name == "fused" else path.stem
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            if path.parent.name == "fused" and node.level == 1:
                continue  # inside the fused package
            if node.level > (2 if path.parent.name == "fused" else 1):
                continue  # outside backends/ (errors.py): tests/test_architecture.py checks the layers
            name = node.module.split(".")[0]
            assert rank[name] < rank[module], f"{path.name} imports {name}: dependencies must point down"
