import math

import pytest
import torch

from gnn_transformer import GraphTransformerEncoderLayer, graphs
from gnn_transformer.variants.biases import RelativePositionBias, alibi_bias, alibi_slopes, relative_position, t5_bucket
from gnn_transformer.testing import relative_difference

DT = torch.float64


def reference_t5_bucket(relative, bidirectional, num_buckets, max_distance):
    """The bucket of one integer, written from the T5 paper's description."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        bucket += num_buckets if relative > 0 else 0
        n = abs(relative)
    else:
        n = max(-relative, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20)])
def test_t5_buckets(bidirectional, num_buckets, max_distance):
    relative = torch.arange(-300, 301)
    expected = [reference_t5_bucket(int(r), bidirectional, num_buckets, max_distance) for r in relative]
    assert t5_bucket(relative, bidirectional, num_buckets, max_distance).tolist() == expected


def test_relative_position_on_edges():
    edge_index = graphs.complete([3])
    assert relative_position(edge_index, torch.arange(3)).tolist() == [0, 1, 2, -1, 0, 1, -2, -1, 0]


def test_alibi_slopes():
    assert alibi_slopes(8).tolist() == [2.0 ** -(h + 1) for h in range(8)]
    six = alibi_slopes(6).tolist()
    assert six[:4] == [2.0 ** -(2 * (h + 1)) for h in range(4)] and six[4:] == [2.0 ** -1, 2.0 ** -3]
    with pytest.raises(ValueError, match="positive"):
        alibi_slopes(0)


def dense_attention_with_mask(layer, x, mask):
    """The same layer run densely on one sequence, with the bias as torch's float mask."""
    torch_layer = layer.to_torch()
    return torch_layer(x, src_mask=mask)


@pytest.mark.parametrize("kind", ["t5", "alibi"])
@pytest.mark.parametrize("graph", ["complete", "causal"])
def test_edge_biases_equal_the_dense_float_mask(kind, graph):
    """A per-edge bias on the graph equals attention under the dense float mask with those entries."""
    n, heads = 7, 2
    layer = GraphTransformerEncoderLayer(8, heads, 16, dropout=0.0, dtype=DT)
    edge_index = getattr(graphs, graph)([n])
    position = torch.arange(n)
    if kind == "t5":
        module = RelativePositionBias(heads, num_buckets=8, max_distance=5, bidirectional=graph == "complete",
                                      dtype=DT)
        bias = module(edge_index, position)
        dense = module.relative_attention_bias(t5_bucket(position[None, :] - position[:, None],
                                                         graph == "complete", 8, 5)).permute(2, 0, 1)
    else:
        bias = alibi_bias(edge_index, position, num_heads=heads).to(DT)
        dense = -(position[None, :] - position[:, None]).abs().to(DT) * alibi_slopes(heads).to(DT)[:, None, None]
    if graph == "causal":
        dense = dense.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    assert torch.equal(graphs.edges_to_mask(edge_index, n, n, bias), dense)
    x = torch.randn(n, 8, dtype=DT)
    out = layer(x, edge_index, bias)
    expected = dense_attention_with_mask(layer, x.unsqueeze(1), dense.repeat(1, 1, 1)).squeeze(1)
    assert relative_difference(out, expected) < 1e-12


# ---------------------------------------------------------------- graph distances, and every bias end to end
import networkx as nx  # noqa: E402
from torch_geometric.data import Data  # noqa: E402

from gnn_transformer import GraphEncoderModel, GraphMultiheadAttention, patterns  # noqa: E402
from gnn_transformer.variants.biases import GraphDistanceBias, distance_bias, graph_distance  # noqa: E402
from gnn_transformer.core.embedding import sinusoidal_encoding  # noqa: E402
from gnn_transformer.testing import torch_reference_mode  # noqa: E402

TREE = nx.Graph([(0, 1), (1, 2), (1, 3), (3, 4), (5, 6)])  # a parse tree and a separate pair: 7 tokens


def networkx_distances(graph, n):
    """(n, n) hop distances from networkx, -1 where no path: the independent reference."""
    table = torch.full((n, n), -1, dtype=torch.long)
    for source, lengths in nx.all_pairs_shortest_path_length(graph):
        for target, hops in lengths.items():
            table[target, source] = hops
    return table


def test_graph_distance_matches_networkx():
    n = 7
    tree_edges = patterns.from_networkx(TREE)
    edge_index = graphs.complete([n])
    expected = networkx_distances(TREE, n)
    assert graph_distance(edge_index, tree_edges, n).tolist() == expected[edge_index[1], edge_index[0]].tolist()
    directed = nx.DiGraph([(0, 1), (1, 2)])
    distances = graph_distance(graphs.complete([3]), patterns.from_networkx(directed), 3, directed=True)
    assert distances.tolist() == [0, -1, -1, 1, 0, -1, 2, 1, 0]  # edges j -> i of complete([3]), by target
    assert graph_distance(edge_index, tree_edges, n, max_distance=1).max() == 1


def test_distance_biases():
    distance = torch.tensor([0, 1, 3, 12, -1])
    module = GraphDistanceBias(2, max_distance=8)
    table = module.distance_bias.weight
    assert torch.equal(module(distance), table[torch.tensor([0, 1, 3, 8, 9])])
    fixed = distance_bias(distance, num_heads=2)
    assert fixed[:4].tolist() == [[-0.0, -0.0], [-1 / 16, -1 / 256], [-3 / 16, -3 / 256], [-12 / 16, -12 / 256]]
    assert torch.isinf(fixed[4]).all()
    assert distance_bias(distance, 2, unreachable=-100.0)[4].tolist() == [-100.0, -100.0]
    with pytest.raises(ValueError, match="max_distance must be non-negative"):
        GraphDistanceBias(2, max_distance=-1)


def bias_and_dense_mask(kind, edge_index, n, heads):
    """A per-edge bias and the dense (H, n, n) float mask built independently from the same definition."""
    position = torch.arange(n)
    relative = position[None, :] - position[:, None]  # [i, j] = p_j - p_i
    if kind == "t5":
        module = RelativePositionBias(heads, num_buckets=8, max_distance=5, dtype=DT)
        bias = module(edge_index, position)
        dense = module.relative_attention_bias(t5_bucket(relative, True, 8, 5)).permute(2, 0, 1)
    elif kind == "alibi":
        bias = alibi_bias(edge_index, position, num_heads=heads).to(DT)
        dense = -relative.abs().to(DT) * alibi_slopes(heads).to(DT)[:, None, None]
    else:
        tree = networkx_distances(TREE, n)
        distance = graph_distance(edge_index, patterns.from_networkx(TREE), n)
        if kind == "graph distance (learned)":
            module = GraphDistanceBias(heads, max_distance=2, dtype=DT)
            bias = module(distance)
            bucket = torch.where(tree < 0, 3, tree.clamp(max=2))
            dense = module.distance_bias.weight[bucket].permute(2, 0, 1)
        else:
            bias = distance_bias(distance, heads).to(DT)
            dense = torch.where(tree < 0, float("-inf"), -tree.to(DT)) * alibi_slopes(heads).to(DT)[:, None, None]
    allowed = ~graphs.edges_to_mask(edge_index, n, n)
    dense = dense.masked_fill(~allowed, float("-inf")).detach()
    return bias.detach(), dense


KINDS = ["t5", "alibi", "graph distance (learned)", "graph distance (fixed)"]
GRAPHS = {"complete": lambda n: graphs.complete([n]), "causal": lambda n: graphs.causal([n]),
          "window": lambda n: patterns.sliding_window([n], 2)}


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("kind", KINDS)
def test_every_bias_equals_its_dense_float_mask_in_attention_and_layers(kind, graph):
    n, heads = 7, 2
    edge_index = GRAPHS[graph](n)
    bias, dense = bias_and_dense_mask(kind, edge_index, n, heads)
    assert torch.equal(graphs.edges_to_mask(edge_index, n, n, bias), dense)
    x = torch.randn(n, 8, dtype=DT)
    attention = GraphMultiheadAttention(8, heads, dtype=DT)
    with torch_reference_mode():
        expected, _ = attention.to_torch()(x, x, x, attn_mask=dense)
    assert relative_difference(attention(x, x, x, edge_index, bias), expected) < 1e-12
    layer = GraphTransformerEncoderLayer(8, heads, 16, dropout=0.0, dtype=DT)
    with torch_reference_mode():
        expected = dense_attention_with_mask(layer, x.unsqueeze(1), dense).squeeze(1)
    assert relative_difference(layer(x, edge_index, bias), expected) < 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_every_bias_through_the_model_with_per_layer_graphs(kind):
    """GraphEncoderModel with a per-layer list of edge sets and biases equals torch layers with float masks."""
    n, heads = 7, 2
    model = GraphEncoderModel(11, d_model=8, nhead=heads, num_layers=2, dim_feedforward=16, dropout=0.0, dtype=DT)
    edge_sets = [graphs.complete([n]), patterns.sliding_window([n], 1)]
    pairs = [bias_and_dense_mask(kind, e, n, heads) for e in edge_sets]
    tokens = torch.randint(11, (n,))
    data = Data(x=tokens, position=torch.arange(n), edge_index=edge_sets, edge_bias=[b for b, _ in pairs])
    out = model(data)
    encoder = model.encoder.to_torch()
    y = (model.embed(tokens) + sinusoidal_encoding(torch.arange(n), 8, dtype=DT)).unsqueeze(1)
    with torch_reference_mode():
        for layer, (_, dense) in zip(encoder.layers, pairs):
            y = layer(y, src_mask=dense)
        expected = model.generator(encoder.norm(y.squeeze(1)))
    assert relative_difference(out, expected) < 1e-12
    single = Data(x=tokens, position=torch.arange(n), edge_index=edge_sets[0], edge_bias=pairs[0][0])
    assert not torch.allclose(model(single), out)  # the second layer's graph matters
