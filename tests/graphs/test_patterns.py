import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from gnn_transformer import GraphTransformerEncoder, GraphTransformerEncoderLayer, graph_attention, graphs, patterns
from gnn_transformer.graphs.patterns._build import Layout, random_keys
from gnn_transformer.testing import relative_difference, torch_reference_mode

DT = torch.float64
LENGTHS = [1, 5, 9, 16]


def brute_force(lengths, allowed, causal=False, extra=0):
    """Every pair (i, j) of every sequence tested one by one; ``extra`` nodes per sequence (star's relay)."""
    edges, start = [], 0
    for length in lengths:
        size = length + extra
        for i in range(size):
            for j in range(size):
                if allowed(i, j, length) and (not causal or j <= i):
                    edges.append((start + j, start + i))
        start += size
    edges.sort(key=lambda edge: (edge[1], edge[0]))
    return torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t()


def assert_edges(actual, expected):
    assert actual.dtype == torch.long and actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.equal(actual, expected)


CASES = {
    "window r=0": (lambda l, c: patterns.sliding_window(l, 0, c), lambda i, j, L: i == j),
    "window r=2": (lambda l, c: patterns.sliding_window(l, 2, c), lambda i, j, L: abs(i - j) <= 2),
    "dilated r=2 d=3": (lambda l, c: patterns.dilated_window(l, 2, 3, c),
                        lambda i, j, L: (i - j) % 3 == 0 and abs(i - j) <= 6),
    "global g=2 r=1": (lambda l, c: patterns.global_tokens(l, 2, 1, c),
                       lambda i, j, L: abs(i - j) <= 1 or i < 2 or j < 2),
    "block b=4": (lambda l, c: patterns.block_local(l, 4, c), lambda i, j, L: i // 4 == j // 4),
    "strided l=3": (lambda l, c: patterns.strided(l, 3, causal=c),
                    lambda i, j, L: abs(i - j) <= 3 or (i - j) % 3 == 0),
    "strided local": (lambda l, c: patterns.strided(l, 3, "local", c), lambda i, j, L: abs(i - j) <= 3),
    "strided strided": (lambda l, c: patterns.strided(l, 3, "strided", c), lambda i, j, L: (i - j) % 3 == 0),
    "convolution k=3 d=2": (lambda l, c: patterns.convolution(l, 3, 2, causal=c),
                            lambda i, j, L: (i - j) % 2 == 0 and (0 <= i - j <= 4)),
}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_sequence_patterns_match_brute_force(name, causal):
    build, allowed = CASES[name]
    if name.startswith("convolution"):  # causal by construction; causal=False centres the kernel
        allowed = (lambda i, j, L: (i - j) % 2 == 0 and abs(i - j) <= 2) if not causal else allowed
    assert_edges(build(LENGTHS, causal), brute_force(LENGTHS, allowed, causal))


def test_chain_and_star_match_brute_force():
    assert_edges(patterns.chain(LENGTHS), brute_force(LENGTHS, lambda i, j, L: j in (i - 1, i)))

    def star(i, j, length):  # relay at position `length`
        if i == length:
            return True
        return j == length or abs(i - j) <= 1 and j < length

    for causal in (False, True):
        assert_edges(patterns.star(LENGTHS, causal), brute_force(LENGTHS, star, causal, extra=1))
    assert patterns.star_lengths(LENGTHS).tolist() == [2, 6, 10, 17]


def test_bigbird_is_window_global_and_its_random_keys():
    lengths, seed = [3, 11, 20], 7
    for causal in (False, True):
        keys = random_keys(Layout.of(lengths), 4, seed, causal)  # (N, 4) node ids, -1 unused
        keys_by_node = {n: set(k for k in row if k >= 0) for n, row in enumerate(keys.tolist())}
        expected, start = [], 0
        for length in lengths:
            for i in range(length):
                for j in range(length):
                    window_or_global = abs(i - j) <= 1 or i < 1 or j < 1
                    if (window_or_global or start + j in keys_by_node[start + i]) and (not causal or j <= i):
                        expected.append((start + j, start + i))
            start += length
        expected.sort(key=lambda e: (e[1], e[0]))
        actual = patterns.bigbird(lengths, 1, 1, 4, seed=seed, causal=causal)
        assert_edges(actual, torch.tensor(expected).t())
        # the random keys: distinct, inside the query's sequence (and before it when causal), min(k, range) of them
        batch = graphs.batch_vector(lengths)
        position = graphs.positions(lengths)
        for node, row in enumerate(keys.tolist()):
            chosen = [k for k in row if k >= 0]
            available = position[node] + 1 if causal else lengths[batch[node]]
            assert len(chosen) == len(set(chosen)) == min(4, int(available))
            assert all(batch[k] == batch[node] and (not causal or k <= node) for k in chosen)
    assert torch.equal(patterns.bigbird(lengths, seed=3), patterns.bigbird(lengths, seed=3))
    assert not torch.equal(patterns.bigbird(lengths, seed=3), patterns.bigbird(lengths, seed=4))


def test_random_keys_are_uniform():
    keys = random_keys(Layout.of([5] * 4000), 2, seed=0)  # each query draws 2 of 5 positions
    positions = keys - graphs.lengths_to_ptr([5] * 4000)[:-1].repeat_interleave(5)[:, None]
    frequency = torch.bincount(positions.flatten(), minlength=5).double() / positions.size(0)
    assert torch.allclose(frequency, torch.full((5,), 0.4, dtype=DT), atol=0.02), frequency


GRIDS = [(2, 3), (3, 3), (1, 4)]


@pytest.mark.parametrize("kind", ["rows", "columns", "window"])
@pytest.mark.parametrize("text_length", [0, 2])
@pytest.mark.parametrize("causal", [False, True])
def test_grid_patterns_match_brute_force(kind, text_length, causal):
    image = {"rows": lambda a, b: a[0] == b[0], "columns": lambda a, b: a[1] == b[1],
             "window": lambda a, b: abs(a[0] - b[0]) <= 1 and abs(a[1] - b[1]) <= 1}[kind]
    expected, start = [], 0
    for height, width in GRIDS:
        size = text_length + height * width
        cell = lambda p: divmod(p - text_length, width)  # noqa: E731
        for i in range(size):
            for j in range(size):
                if i < text_length:
                    ok = j < text_length
                else:
                    ok = j < text_length or image(cell(i), cell(j))
                if ok and (not causal or j <= i):
                    expected.append((start + j, start + i))
        start += size
    expected.sort(key=lambda e: (e[1], e[0]))
    build = {"rows": patterns.grid_rows, "columns": patterns.grid_columns,
             "window": lambda g, t, c: patterns.grid_window(g, 3, t, c)}[kind]
    assert_edges(build(GRIDS, text_length, causal), torch.tensor(expected).t())
    assert patterns.grid_lengths(GRIDS, text_length).tolist() == [text_length + h * w for h, w in GRIDS]


def test_from_networkx_and_pyg():
    words = nx.Graph([("the", "cat"), ("cat", "sat")])  # nodes in insertion order: the, cat, sat
    tree = nx.DiGraph([(2, 0), (2, 1)])  # nodes 2, 0, 1 -> 0, 1, 2
    edges = patterns.from_networkx([words, tree])
    expected = sorted([(1, 0), (0, 1), (2, 1), (1, 2), (3 + 0, 3 + 1), (3 + 0, 3 + 2)], key=lambda e: (e[1], e[0]))
    assert edges.t().tolist() == [list(e) for e in expected]
    looped = patterns.from_networkx(words, add_self_loops=True)
    assert looped.size(1) == 4 + 3
    data = Data(edge_index=torch.tensor([[2, 0, 2, 1], [1, 1, 1, 0]]), num_nodes=3)
    assert patterns.from_pyg(data).tolist() == [[1, 0, 2], [0, 1, 1]]
    with pytest.raises(ValueError, match="refers to source node 5"):
        patterns.from_pyg(Data(edge_index=torch.tensor([[5], [0]]), num_nodes=3))
    with pytest.raises(TypeError, match="networkx Graph"):
        patterns.from_networkx([[0, 1]])
    union = patterns.disjoint_union([torch.tensor([[1], [0]]), torch.tensor([[0], [0]])], [2, 1], add_self_loops=True)
    assert union.tolist() == [[0, 1, 1, 2], [0, 0, 1, 2]]
    with pytest.raises(ValueError, match="2 edge sets but 1 node counts"):
        patterns.disjoint_union([torch.tensor([[1], [0]])] * 2, [2])
    with pytest.raises(ValueError, match="edge set 0 refers to source node 1"):
        patterns.disjoint_union([torch.tensor([[1], [0]])], [1])


def test_union_and_restrict_causal():
    lengths = [4]
    longformer = patterns.union(patterns.sliding_window(lengths, 1), patterns.global_tokens(lengths, 1))
    assert torch.equal(longformer, patterns.global_tokens(lengths, 1, radius=1))
    causal = patterns.restrict_causal(graphs.complete(lengths), graphs.positions(lengths))
    assert torch.equal(causal, graphs.causal(lengths))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="radius must be at least 0"):
        patterns.sliding_window([4], -1)
    with pytest.raises(ValueError, match="block_size must be at least 1"):
        patterns.block_local([4], 0)
    with pytest.raises(ValueError, match="part must be one of"):
        patterns.strided([4], 2, part="diagonal")
    with pytest.raises(ValueError, match="odd kernel_size"):
        patterns.grid_window((3, 3), 2)
    with pytest.raises(ValueError, match="odd kernel_size"):
        patterns.convolution([4], 2, causal=False)
    with pytest.raises(ValueError, match="grid must be"):
        patterns.grid_rows((2, 2, 2))
    with pytest.raises(TypeError, match="stride must be an integer"):
        patterns.strided([4], 2.5)


ALL = {
    "window": lambda l: patterns.sliding_window(l, 2),
    "causal window": lambda l: patterns.sliding_window(l, 2, causal=True),
    "dilated": lambda l: patterns.dilated_window(l, 1, 2),
    "global": lambda l: patterns.global_tokens(l, 1, 1),
    "bigbird": lambda l: patterns.bigbird(l, 1, 1, 2, seed=1),
    "block": lambda l: patterns.block_local(l, 3),
    "strided": lambda l: patterns.strided(l, 3, causal=True),
    "chain": patterns.chain,
    "convolution": lambda l: patterns.convolution(l, 3),
}


def dense_mask(edge_index, n):
    return graphs.edges_to_mask(edge_index, n, n)  # (N, N) True = blocked


@pytest.mark.parametrize("name", [*ALL, "star", "grid rows", "grid columns", "grid window", "networkx"])
def test_every_pattern_equals_dense_attention_under_its_mask(name):
    lengths = [7, 3, 9]
    if name == "star":
        edge_index, n = patterns.star(lengths), int(patterns.star_lengths(lengths).sum())
    elif name.startswith("grid"):
        grid = [(2, 3), (3, 3)]
        build = {"grid rows": patterns.grid_rows, "grid columns": patterns.grid_columns,
                 "grid window": patterns.grid_window}[name]
        edge_index, n = build(grid, text_length=2, causal=True), int(patterns.grid_lengths(grid, 2).sum())
    elif name == "networkx":
        edge_index, n = patterns.from_networkx(nx.petersen_graph(), add_self_loops=True), 10
    else:
        edge_index, n = ALL[name](lengths), sum(lengths)
    q, k, v = (torch.randn(n, 2, 4, dtype=DT) for _ in range(3))
    out = graph_attention(q, k, v, edge_index)
    expected = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                              attn_mask=~dense_mask(edge_index, n)).transpose(0, 1)
    assert relative_difference(out, expected) < 1e-12
    layer = GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=DT)
    x = torch.randn(n, 8, dtype=DT)
    with torch_reference_mode():
        reference = layer.to_torch()(x.unsqueeze(1), src_mask=dense_mask(edge_index, n)).squeeze(1)
    assert relative_difference(layer(x, edge_index), reference) < 1e-12


def test_sparse_transformer_factorised_over_layers_equals_dense_layers():
    """Alternating local and strided layers (a per-layer list) equal torch layers with alternating masks."""
    lengths, n = [10, 6], 16
    edge_sets = [patterns.strided(lengths, 3, part, causal=True) for part in ("local", "strided")] * 2
    encoder = GraphTransformerEncoder(GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=DT), 4)
    x = torch.randn(n, 8, dtype=DT)
    out, weights = encoder(x, edge_sets, return_attention_weights=True)
    assert [w.size(0) for w in weights] == [e.size(1) for e in edge_sets]
    torch_encoder = encoder.to_torch()
    y = x.unsqueeze(1)
    with torch_reference_mode():
        for layer, edges in zip(torch_encoder.layers, edge_sets):
            y = layer(y, src_mask=dense_mask(edges, n))
    assert relative_difference(out, y.squeeze(1)) < 1e-12
