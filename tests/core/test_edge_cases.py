"""torch's edge cases: empty batches, zero-length sequences, no edges, every key blocked, dtype mixes."""
import warnings

import pytest
import torch
from torch import nn

from gnn_transformer import (GraphMultiheadAttention, GraphTransformer, GraphTransformerDecoder,
                             GraphTransformerDecoderLayer, GraphTransformerEncoder, GraphTransformerEncoderLayer,
                             graphs)
from gnn_transformer.testing import default_tolerance, relative_difference, torch_reference_mode

DT = torch.float64
TOL = default_tolerance(DT)
NO_EDGES = torch.empty(2, 0, dtype=torch.long)


def assert_like_torch(actual, expected):
    """Same structure and shapes as torch's result, and the same values to TOL (no NaN anywhere)."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_like_torch(a, e)
    elif expected is None:
        assert actual is None
    else:
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        assert relative_difference(actual, expected) <= TOL


def call_both(module, graph, *args, **kwargs):
    with torch_reference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = module(*args, **kwargs)
    assert_like_torch(graph(*args, **kwargs), expected)


def padded(length, batch, batch_first):
    """(L, B, 8) or (B, L, 8); ``batch=None``: unbatched (L, 8)."""
    if batch is None:
        return torch.randn(length, 8, dtype=DT)
    return torch.randn(*((batch, length) if batch_first else (length, batch)), 8, dtype=DT)


def torch_transformer(batch_first):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nn.Transformer(8, 2, 2, 2, 16, batch_first=batch_first, dtype=DT).eval()


# (query / target length, key / source length, batch): an empty batch and zero-length sequences
SIZES = [(5, 4, 0), (0, 4, 2), (5, 0, 2), (0, 0, 2), (0, 4, None), (5, 0, None), (0, 0, None)]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("length, source_length, batch", SIZES)
@pytest.mark.parametrize("need_weights", [True, False])
def test_attention_on_empty_inputs(batch_first, length, source_length, batch, need_weights):
    module = nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=DT).eval()
    nn.init.normal_(module.out_proj.bias)  # no keys: the output is out_proj's bias, as in torch
    query, key = padded(length, batch, batch_first), padded(source_length, batch, batch_first)
    call_both(module, GraphMultiheadAttention.from_torch(module), query, key, key, need_weights=need_weights)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("length, source_length, batch", SIZES)
def test_layers_and_stacks_on_empty_inputs(batch_first, length, source_length, batch):
    transformer = torch_transformer(batch_first)
    src, tgt = padded(source_length, batch, batch_first), padded(length, batch, batch_first)
    encoder_layer, decoder_layer = transformer.encoder.layers[0], transformer.decoder.layers[0]
    call_both(encoder_layer, GraphTransformerEncoderLayer.from_torch(encoder_layer), src)
    call_both(transformer.encoder, GraphTransformerEncoder.from_torch(transformer.encoder), src)
    call_both(decoder_layer, GraphTransformerDecoderLayer.from_torch(decoder_layer), tgt, src)
    call_both(transformer.decoder, GraphTransformerDecoder.from_torch(transformer.decoder), tgt, src)
    call_both(transformer, GraphTransformer.from_torch(transformer), src, tgt)


def test_encoder_layer_on_an_empty_batch_gives_torchs_shape():
    layer = nn.TransformerEncoderLayer(8, 2, 16).eval()
    assert GraphTransformerEncoderLayer.from_torch(layer)(torch.rand(5, 0, 8)).shape == (5, 0, 8) == \
        layer(torch.rand(5, 0, 8)).shape


def test_graph_native_calls_with_no_targets_or_no_edges():
    """Zero nodes give zero rows; a target without edges gets a zero attention output (out_proj's bias)."""
    attention = GraphMultiheadAttention(8, 2, dtype=DT).eval()
    nn.init.normal_(attention.out_proj.bias)
    memory = torch.randn(4, 8, dtype=DT)
    out, weights = attention(torch.randn(0, 8, dtype=DT), memory, memory, NO_EDGES, return_attention_weights=True)
    assert out.shape == (0, 8) and weights.shape == (0, 2)
    out, weights = attention(torch.randn(3, 8, dtype=DT), memory, memory, NO_EDGES, return_attention_weights=True)
    assert torch.equal(out, attention.out_proj.bias.expand(3, 8)) and weights.shape == (0, 2)
    model = GraphTransformer(8, 2, 2, 2, 16, dropout=0.0, dtype=DT).eval()
    nothing = torch.randn(0, 8, dtype=DT)
    assert model.encoder(nothing, NO_EDGES).shape == (0, 8)
    assert model.encoder(nothing, [NO_EDGES, NO_EDGES]).shape == (0, 8)
    assert model.decoder(nothing, memory, NO_EDGES, NO_EDGES).shape == (0, 8)
    assert model(nothing, nothing, NO_EDGES, NO_EDGES, NO_EDGES).shape == (0, 8)
    assert model.encoder.layers[0](nothing, NO_EDGES, return_attention_weights=True)[1].shape == (0, 2)


def test_graph_native_calls_without_edges_match_torch_with_every_key_blocked():
    transformer = torch_transformer(False)
    x, memory = torch.randn(3, 8, dtype=DT), torch.randn(4, 8, dtype=DT)
    causal = nn.Transformer.generate_square_subsequent_mask(3, dtype=DT)
    with torch_reference_mode():
        encoder = transformer.encoder.layers[0](x, src_mask=torch.ones(3, 3, dtype=torch.bool))
        decoder = transformer.decoder(x, memory, tgt_mask=causal, memory_mask=torch.ones(3, 4, dtype=torch.bool))
        no_source = transformer(torch.randn(0, 8, dtype=DT), x, tgt_mask=causal)
    graph = GraphTransformer.from_torch(transformer)
    assert relative_difference(graph.encoder.layers[0](x, NO_EDGES), encoder) <= TOL
    assert relative_difference(graph.decoder(x, memory, graphs.causal([3]), NO_EDGES), decoder) <= TOL
    src = torch.randn(0, 8, dtype=DT)
    assert relative_difference(graph(src, x, NO_EDGES, graphs.causal([3]), NO_EDGES), no_source) <= TOL


BLOCKED = {  # masks that block every real key of 3 queries over 3 keys (4 heads x 2 batch for 3-D)
    "float -inf": lambda: torch.full((3, 3), float("-inf"), dtype=DT),
    "float -inf per head": lambda: torch.full((4, 3, 3), float("-inf"), dtype=DT),
    "bool": lambda: torch.ones(3, 3, dtype=torch.bool),
}


@pytest.mark.parametrize("backend", ["reference", "chunked"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mask", sorted(BLOCKED))
@pytest.mark.parametrize("add_bias_kv, add_zero_attn", [(True, False), (False, True), (True, True)])
def test_virtual_sources_when_every_real_key_is_blocked(add_bias_kv, add_zero_attn, mask, batch_first, backend):
    """Only the virtual keys remain (torch pads its masks with an open column for each)."""
    module = nn.MultiheadAttention(8, 2, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn,
                                   batch_first=batch_first, dtype=DT).eval()
    graph = GraphMultiheadAttention.from_torch(module, backend=backend)
    x = padded(3, 2, batch_first)
    for need_weights in (True, False):
        call_both(module, graph, x, x, x, attn_mask=BLOCKED[mask](), need_weights=need_weights)
    call_both(module, graph, x, x, x, key_padding_mask=torch.ones(2, 3, dtype=torch.bool))


def _attention(**options):
    module = nn.MultiheadAttention(8, 2, dtype=DT, **options).eval()
    nn.init.normal_(module.in_proj_bias)
    return module


def _store(module: nn.Module, name: str, dtype: torch.dtype) -> None:
    """Store the parameter ``name`` (dotted) of ``module`` in ``dtype``."""
    owner, _, attribute = name.rpartition(".")
    holder = module.get_submodule(owner)
    setattr(holder, attribute, nn.Parameter(getattr(holder, attribute).detach().to(dtype)))


def _mask(shape, dtype):
    return torch.randn(*shape, dtype=torch.float32).to(dtype)  # values exact in every float dtype used


def _dtype_cases():
    """name -> (torch module, {parameter: dtype} to store it in, args, kwargs)."""
    x, memory = torch.randn(3, 2, 8, dtype=DT), torch.randn(4, 2, 8, dtype=DT)
    encoder = nn.TransformerEncoderLayer(8, 2, 16, dtype=DT).eval()
    decoder = nn.TransformerDecoderLayer(8, 2, 16, dtype=DT).eval()
    bool_mask = torch.tensor([[False, True, False], [False, False, True], [True, False, False]])
    return {
        "float16 in_proj_bias": (_attention(), {"in_proj_bias": torch.float16}, (x, x, x), {}),
        "float32 in_proj_bias, no weights": (_attention(), {"in_proj_bias": torch.float32}, (x, x, x),
                                             dict(need_weights=False)),
        "float16 out_proj.bias": (_attention(), {"out_proj.bias": torch.float16}, (x, x, x), {}),
        "float16 bias_k": (_attention(add_bias_kv=True), {"bias_k": torch.float16}, (x, x, x), {}),
        "bfloat16 bias_v": (_attention(add_bias_kv=True), {"bias_v": torch.bfloat16}, (x, x, x), {}),
        "float32 key and value": (_attention(), {}, (x, x.float(), x.float()), {}),
        "bool attn_mask, float16 key_padding_mask": (_attention(), {}, (x, x, x), dict(
            attn_mask=bool_mask, key_padding_mask=_mask((2, 3), torch.float16), need_weights=False)),
        "float32 attn_mask, no weights": (_attention(), {}, (x, x, x), dict(attn_mask=_mask((3, 3), torch.float32),
                                                                              need_weights=False)),
        "float32 src_mask in a layer": (encoder, {}, (x,), dict(src_mask=_mask((3, 3), torch.float32))),
        "float32 src_key_padding_mask in a layer": (encoder, {}, (x,), dict(
            src_key_padding_mask=_mask((2, 3), torch.float32))),
        "float32 memory_mask in a layer": (decoder, {}, (x, memory), dict(memory_mask=_mask((3, 4), torch.float32))),
        "float32 memory_key_padding_mask in a layer": (decoder, {}, (x, memory), dict(
            memory_key_padding_mask=_mask((2, 4), torch.float32))),
    }


@pytest.mark.parametrize("case", sorted(_dtype_cases()))
def test_dtype_mixes_follow_torch(case):
    """What torch accepts is accepted with torch's result (dtype included); what it rejects raises too."""
    module, stored, args, kwargs = _dtype_cases()[case]
    graph = {nn.MultiheadAttention: GraphMultiheadAttention, nn.TransformerEncoderLayer: GraphTransformerEncoderLayer,
             nn.TransformerDecoderLayer: GraphTransformerDecoderLayer}[type(module)].from_torch(module)
    for name, dtype in stored.items():
        _store(module, name, dtype)
        _store(graph, name, dtype)
    try:
        with torch_reference_mode():
            expected = module(*args, **kwargs)
    except RuntimeError as error:
        assert "dtype" in str(error)
        with pytest.raises(RuntimeError, match="dtype"):
            graph(*args, **kwargs)
        return
    assert_like_torch(graph(*args, **kwargs), expected)
