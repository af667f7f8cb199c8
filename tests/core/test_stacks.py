import pytest
import torch
from torch import nn

from gnn_transformer import (GraphTransformer, GraphTransformerDecoder, GraphTransformerEncoder, GraphTransformerEncoderLayer, graphs)
from gnn_transformer.testing import (assert_matches_torch, assert_permutation_equivariant, compare_functions,
                                     relative_difference)

from ..conftest import devices

DT = torch.float64


def torch_transformer(norm_first=False, activation="relu", bias=True, batch_first=False, device="cpu", dtype=DT):
    return nn.Transformer(d_model=12, nhead=3, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=24,
                          dropout=0.0, activation=activation, norm_first=norm_first, bias=bias,
                          batch_first=batch_first, device=device, dtype=dtype)


def padded(lengths, max_len, batch_first, device="cpu", dtype=DT):
    x = torch.randn(len(lengths), max_len, 12, dtype=dtype, device=device)
    return (x if batch_first else x.transpose(0, 1)), graphs.padding_mask(lengths, max_len).to(device)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_matches_torch(device, dtype, norm_first, batch_first):
    model = torch_transformer(norm_first=norm_first, batch_first=batch_first, device=device, dtype=dtype)
    graph = GraphTransformer.from_torch(model)
    src, src_padding = padded([5, 1, 3], 5, batch_first, device, dtype)
    tgt, tgt_padding = padded([2, 4, 1], 4, batch_first, device, dtype)
    causal = model.generate_square_subsequent_mask(4, device=device, dtype=dtype)
    assert_matches_torch(graph, model, src, tgt, tgt_mask=causal, src_key_padding_mask=src_padding,
                         tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=src_padding)
    assert_matches_torch(graph, model, src, tgt)  # no masks: full attention everywhere, as in torch


def test_transformer_unbatched_and_is_causal_hints():
    model = torch_transformer()
    graph = GraphTransformer.from_torch(model)
    src, tgt = torch.randn(5, 12, dtype=DT), torch.randn(3, 12, dtype=DT)
    causal = model.generate_square_subsequent_mask(3, dtype=DT)
    assert_matches_torch(graph, model, src, tgt, tgt_mask=causal, tgt_is_causal=True)
    src_causal = model.generate_square_subsequent_mask(5, dtype=DT)
    assert_matches_torch(graph, model, src, tgt, src_mask=src_causal, src_is_causal=None, tgt_mask=causal)


def test_stacks_match_torch():
    layer = nn.TransformerEncoderLayer(12, 3, 24, dropout=0.0, dtype=DT)
    encoder = nn.TransformerEncoder(layer, 3, nn.LayerNorm(12, dtype=DT), enable_nested_tensor=False)
    src, padding = padded([4, 2], 4, False)
    assert_matches_torch(GraphTransformerEncoder.from_torch(encoder), encoder, src, src_key_padding_mask=padding)
    decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(12, 3, 24, dropout=0.0, dtype=DT), 2)
    tgt, tgt_padding = padded([3, 1], 3, False)
    assert_matches_torch(GraphTransformerDecoder.from_torch(decoder), decoder, tgt, src,
                         tgt_mask=nn.Transformer.generate_square_subsequent_mask(3, dtype=DT),
                         tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=padding)


def test_graph_native_transformer_on_ragged_batch():
    model = torch_transformer(batch_first=True)
    graph = GraphTransformer.from_torch(model)
    src_lengths, tgt_lengths = torch.tensor([5, 1, 3]), torch.tensor([2, 4, 1])
    src, src_padding = padded(src_lengths, 5, True)
    tgt, tgt_padding = padded(tgt_lengths, 4, True)
    causal = torch.ones(4, 4, dtype=torch.bool).triu(1)
    report = compare_functions(
        lambda s, t: graphs.to_padded(graph(graphs.to_nodes(s, src_lengths), graphs.to_nodes(t, tgt_lengths),
                                            graphs.complete(src_lengths), graphs.causal(tgt_lengths),
                                            graphs.bipartite(src_lengths, tgt_lengths)), tgt_lengths), graph,
        lambda s, t: model(s, t, tgt_mask=causal, src_key_padding_mask=src_padding, tgt_key_padding_mask=tgt_padding,
                           memory_key_padding_mask=src_padding) * (~tgt_padding).unsqueeze(-1), model, [src, tgt])
    assert report.passed, report


def test_one_graph_per_layer_equals_repeating_it():
    encoder = GraphTransformerEncoder(GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0), 3)
    x, edges = torch.randn(5, 8), graphs.causal([5])
    assert torch.equal(encoder(x, edges), encoder(x, [edges, edges, edges]))
    assert not torch.allclose(encoder(x, edges), encoder(x, [edges, graphs.complete([5]), edges]))
    with pytest.raises(ValueError, match="list of 2 entries but the stack has 3 layers"):
        encoder(x, [edges, edges])
    out, weights = encoder(x, edges, return_attention_weights=True)
    assert len(weights) == 3 and weights[0].shape == (15, 2)


@pytest.mark.parametrize("norm_first", [False, True])
def test_state_dicts_round_trip_strictly_both_ways(norm_first):
    model = torch_transformer(norm_first=norm_first, bias=False)
    graph = GraphTransformer.from_torch(model)
    assert list(graph.state_dict()) == list(model.state_dict())
    back = graph.to_torch()
    assert isinstance(back, nn.Transformer)
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    fresh = GraphTransformer(12, 3, 2, 2, 24, norm_first=norm_first, bias=False)
    fresh.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(fresh.state_dict(), strict=True)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(12, 3, 24), 2, enable_nested_tensor=False)
    converted = GraphTransformerEncoder.from_torch(encoder)
    assert converted.norm is None and converted.to_torch().enable_nested_tensor is False


def test_generate_square_subsequent_mask_is_torchs():
    assert torch.equal(GraphTransformer.generate_square_subsequent_mask(4),
                       nn.Transformer.generate_square_subsequent_mask(4))


def test_encoder_is_permutation_equivariant_on_complete_graph_only():
    encoder = GraphTransformerEncoder(GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=DT), 2)
    x = torch.randn(6, 8, dtype=DT)
    permutation = torch.tensor([3, 0, 5, 1, 4, 2])
    assert_permutation_equivariant(encoder, x, graphs.complete([6]), permutation)
    # Relabelling also the causal edges keeps equivariance (it is a property of message passing) ...
    assert_permutation_equivariant(encoder, x, graphs.causal([6]), permutation)
    # ... but a causal encoder is not invariant to reordering the *sequence*: the graph itself changes.
    out = encoder(x, graphs.causal([6]))
    reordered = encoder(x[permutation], graphs.causal([6]))
    assert relative_difference(reordered, out[permutation]) > 1e-3
    with pytest.raises(AssertionError, match="not permutation equivariant"):
        assert_permutation_equivariant(lambda h, e: encoder(h, graphs.causal([6])), x, graphs.causal([6]),
                                       permutation)


def test_bad_inputs():
    model = GraphTransformer(12, 3, 1, 1, 24)
    with pytest.raises(ValueError, match="batch number of src and tgt must be equal, got 2 and 3"):
        model(torch.randn(4, 2, 12), torch.randn(3, 3, 12))
    with pytest.raises(ValueError, match="feature number of src and tgt must be equal to d_model=12"):
        model(torch.randn(4, 2, 12), torch.randn(3, 2, 10))
    with pytest.raises(RuntimeError, match="is_causal=True needs tgt_mask"):
        model(torch.randn(4, 2, 12), torch.randn(3, 2, 12), tgt_is_causal=True)
    with pytest.raises(ValueError, match="not causal"):
        model(torch.randn(4, 2, 12), torch.randn(3, 2, 12), tgt_mask=torch.zeros(3, 3), tgt_is_causal=True)
    with pytest.raises(ValueError, match=r"memory_key_padding_mask has shape \(2, 3\)"):
        model(torch.randn(4, 2, 12), torch.randn(3, 2, 12), memory_key_padding_mask=torch.zeros(2, 3).bool())
    with pytest.raises(TypeError, match="encoder_layer must be a GraphTransformerEncoderLayer"):
        GraphTransformerEncoder(nn.TransformerEncoderLayer(8, 2), 2)
    with pytest.raises(TypeError, match="decoder_layer must be a GraphTransformerDecoderLayer"):
        GraphTransformerDecoder(GraphTransformerEncoderLayer(8, 2), 2)
    with pytest.raises(TypeError, match="expects a torch.nn.Transformer"):
        GraphTransformer.from_torch(nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2), 1))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        GraphTransformer(10, 4)
