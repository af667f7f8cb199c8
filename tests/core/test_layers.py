import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gnn_transformer import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer, graphs
from gnn_transformer.testing import assert_matches_torch, compare_functions

from ..conftest import devices

DT = torch.float64
ACTIVATIONS = ["relu", "gelu", F.gelu, lambda x: torch.tanh(x) * x, nn.GELU(approximate="tanh")]


def layer_kwargs(norm_first, activation, bias, batch_first, device="cpu", dtype=DT):
    return dict(dim_feedforward=20, dropout=0.0, activation=activation, norm_first=norm_first, bias=bias,
                batch_first=batch_first, device=device, dtype=dtype)


def batch(lengths, max_len, batch_first, d=12, device="cpu", dtype=DT):
    x = torch.randn(len(lengths), max_len, d, dtype=dtype, device=device)
    padding = graphs.padding_mask(lengths, max_len).to(device)
    return (x if batch_first else x.transpose(0, 1)), padding


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["relu", "gelu", "F.gelu", "callable", "module"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_layer_matches_torch(device, norm_first, activation, bias, batch_first):
    layer = nn.TransformerEncoderLayer(12, 3, **layer_kwargs(norm_first, activation, bias, batch_first, device))
    graph = GraphTransformerEncoderLayer.from_torch(layer)
    src, padding = batch([5, 1, 3], 5, batch_first, device=device)
    assert_matches_torch(graph, layer, src, src_key_padding_mask=padding)
    assert_matches_torch(graph, layer, src, src_mask=torch.ones(5, 5, dtype=torch.bool, device=device).triu(1))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS[:3], ids=["relu", "gelu", "F.gelu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_decoder_layer_matches_torch(device, norm_first, activation, bias, batch_first):
    layer = nn.TransformerDecoderLayer(12, 3, **layer_kwargs(norm_first, activation, bias, batch_first, device))
    graph = GraphTransformerDecoderLayer.from_torch(layer)
    tgt, tgt_padding = batch([4, 2, 1], 4, batch_first, device=device)
    memory, memory_padding = batch([1, 6, 3], 6, batch_first, device=device)
    causal = nn.Transformer.generate_square_subsequent_mask(4, device=device, dtype=DT)
    assert_matches_torch(graph, layer, tgt, memory, tgt_mask=causal, tgt_is_causal=True,
                         memory_key_padding_mask=memory_padding)
    assert_matches_torch(graph, layer, tgt, memory, tgt_mask=causal.isinf(), tgt_key_padding_mask=tgt_padding,
                         memory_key_padding_mask=memory_padding)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_masks_and_arbitrary_padding(dtype):
    layer = nn.TransformerDecoderLayer(8, 2, **layer_kwargs(False, "relu", True, True, dtype=dtype))
    graph = GraphTransformerDecoderLayer.from_torch(layer)
    tgt, memory = torch.randn(3, 4, 8, dtype=dtype), torch.randn(3, 5, 8, dtype=dtype)
    tgt_mask = torch.randn(4, 4, dtype=dtype).masked_fill(torch.rand(4, 4) < 0.3, float("-inf"))
    memory_mask = torch.randn(4, 5, dtype=dtype)
    tgt_padding = torch.rand(3, 4) < 0.4  # holes anywhere, fully masked rows possible
    memory_padding = torch.rand(3, 5) < 0.4
    memory_padding[1] = True  # sequence 1 sees no memory at all
    assert_matches_torch(graph, layer, tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                         tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=memory_padding)


def test_encoder_layer_graph_call_on_ragged_batch():
    layer = nn.TransformerEncoderLayer(12, 3, **layer_kwargs(True, "gelu", True, True))
    graph = GraphTransformerEncoderLayer.from_torch(layer)
    lengths = torch.tensor([4, 1, 2])
    src, padding = batch(lengths, 4, True)
    real = (~padding).unsqueeze(-1)
    report = compare_functions(
        lambda x: graphs.to_padded(graph(graphs.to_nodes(x, lengths), graphs.complete(lengths)), lengths), graph,
        lambda x: layer(x, src_key_padding_mask=padding) * real, layer, [src])
    assert report.passed, report


def test_layer_returns_attention_weights():
    graph = GraphTransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
    x, memory = torch.randn(3, 8), torch.randn(4, 8)
    out, weights = graph(x, memory, graphs.causal([3]), graphs.bipartite([4], [3]), return_attention_weights=True)
    assert out.shape == (3, 8) and weights["self"].shape == (6, 2) and weights["cross"].shape == (12, 2)
    encoder = GraphTransformerEncoderLayer(8, 2, dim_feedforward=16)
    _, weights = encoder(x, graphs.complete([3]), return_attention_weights=True)
    assert weights.shape == (9, 2)


def test_round_trip_and_options():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, layer_norm_eps=1e-6, norm_first=True, bias=False)
    graph = GraphTransformerEncoderLayer.from_torch(layer)
    assert graph.norm1.eps == 1e-6 and graph.norm_first and graph.linear1.bias is None
    back = graph.to_torch()
    assert isinstance(back, nn.TransformerEncoderLayer)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in layer.state_dict().items())


def test_bad_inputs():
    with pytest.raises(ValueError, match="activation should be 'relu', 'gelu' or a callable"):
        GraphTransformerEncoderLayer(8, 2, activation="swish")
    with pytest.raises(ValueError, match="multiple of num_heads"):
        GraphTransformerDecoderLayer(8, 3)
    layer = GraphTransformerEncoderLayer(8, 2)
    with pytest.raises(ValueError, match="x has 7 features per node but the module expects 8"):
        layer(torch.randn(3, 7), graphs.complete([3]))
    with pytest.raises(ValueError, match=r"src_mask has shape \(2, 2\) but should be"):
        layer(torch.randn(3, 1, 8), src_mask=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"src_key_padding_mask has shape \(1, 2\)"):
        layer(torch.randn(3, 1, 8), src_key_padding_mask=torch.zeros(1, 2, dtype=torch.bool))
    decoder = GraphTransformerDecoderLayer(8, 2)
    with pytest.raises(ValueError, match="memory has 4 features per node"):
        decoder(torch.randn(3, 8), torch.randn(2, 4), graphs.causal([3]), graphs.bipartite([2], [3]))
    with pytest.raises(ValueError, match="refers to source node 3 but only 3 source tokens"):
        decoder(torch.randn(3, 8), torch.randn(2, 8), graphs.causal([4]), graphs.bipartite([2], [3]))
