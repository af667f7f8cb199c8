import math

import pytest
import torch

from gnn_transformer import GraphTransformerEncoderLayer, graphs
from gnn_transformer.biases import RelativePositionBias, alibi_bias, alibi_slopes, relative_position, t5_bucket
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
