"""Module calls go through ``module(...)``: forward hooks fire as in torch, in both calls."""
import warnings
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torch_geometric.utils import scatter

from gnn_transformer import (GraphMultiheadAttention, GraphTransformer, GraphTransformerDecoder,
                             GraphTransformerDecoderLayer, GraphTransformerEncoder, GraphTransformerEncoderLayer,
                             graphs)
from gnn_transformer.core.functional import edge_softmax
from gnn_transformer.testing import relative_difference, torch_reference_mode

DT = torch.float64
TOL = 1e-12


@contextmanager
def hooked(module: nn.Module):
    """{qualified name: output} of every submodule (root included) whose forward hook fired."""
    seen = {}

    def keep(name):
        def hook(_, args, output):
            assert name not in seen, f"{name} called twice"
            seen[name] = output
        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in module.named_modules()]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def assert_same(name, actual, expected):
    """Outputs equal elementwise (tuples element by element, ``None`` for ``None``) to TOL in float64."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), f"{name}: {type(actual)} vs {expected}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same(f"{name}[{index}]", a, e)
    elif expected is None:
        assert actual is None, f"{name}: got {type(actual).__name__}, torch returns None"
    else:
        assert actual.shape == expected.shape, f"{name}: {tuple(actual.shape)} vs torch's {tuple(expected.shape)}"
        assert relative_difference(actual, expected) <= TOL, f"{name}: {relative_difference(actual, expected):.2e}"


def padded(batch_first, length, batch=2, d=16):
    x = torch.randn(length, batch, d, dtype=DT)
    return x.transpose(0, 1).contiguous() if batch_first else x


def cases(kind, num_layers, norm_first, batch_first):
    """(torch module, its graph twin, args, kwargs) of one call with padding and causal masks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's nested-tensor notice for norm_first
        transformer = nn.Transformer(16, 2, num_layers, num_layers, norm_first=norm_first, batch_first=batch_first,
                                     dtype=DT).eval()
    src, tgt = padded(batch_first, 5), padded(batch_first, 4)
    src_padding = graphs.padding_mask([5, 3], 5)
    tgt_padding = graphs.padding_mask([4, 2], 4)
    causal = nn.Transformer.generate_square_subsequent_mask(4, dtype=DT)
    memory = transformer.encoder(src, src_key_padding_mask=src_padding)
    decoder_kwargs = dict(tgt_mask=causal, tgt_key_padding_mask=tgt_padding, memory_key_padding_mask=src_padding)
    if kind == "transformer":
        return transformer, GraphTransformer.from_torch(transformer), (src, tgt), dict(
            src_key_padding_mask=src_padding, **decoder_kwargs)
    if kind == "encoder":
        return transformer.encoder, GraphTransformerEncoder.from_torch(transformer.encoder), (src,), dict(
            src_key_padding_mask=src_padding)
    if kind == "decoder":
        return transformer.decoder, GraphTransformerDecoder.from_torch(transformer.decoder), (tgt, memory), \
            decoder_kwargs
    if kind == "encoder layer":
        layer = transformer.encoder.layers[0]
        return layer, GraphTransformerEncoderLayer.from_torch(layer), (src,), dict(src_key_padding_mask=src_padding)
    if kind == "decoder layer":
        layer = transformer.decoder.layers[0]
        return layer, GraphTransformerDecoderLayer.from_torch(layer), (tgt, memory), decoder_kwargs
    attention = nn.MultiheadAttention(16, 2, batch_first=batch_first, dtype=DT).eval()
    return attention, GraphMultiheadAttention.from_torch(attention), (tgt, src, src), dict(
        key_padding_mask=src_padding)


KINDS = ["transformer", "encoder", "decoder", "encoder layer", "decoder layer"]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_forward_hooks_fire_as_in_torch(kind, num_layers, norm_first, batch_first):
    """The same modules' hooks fire, with torch's outputs: padded layout, ``(attn_output, None)`` inside
    layers, no ``out_proj`` (torch's attention applies its weights functionally)."""
    with torch_reference_mode():
        module, graph, args, kwargs = cases(kind, num_layers, norm_first, batch_first)
        with hooked(module) as expected:
            module(*args, **kwargs)
    with hooked(graph) as actual:
        graph(*args, **kwargs)
    assert sorted(actual) == sorted(expected)
    assert any(name.endswith("self_attn") for name in expected)
    for name, output in expected.items():
        assert_same(name, actual[name], output)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights", [True, False])
def test_attention_hook_outputs_as_in_torch(batch_first, need_weights):
    with torch_reference_mode():
        module, graph, args, kwargs = cases("attention", 1, False, batch_first)
        with hooked(module) as expected:
            module(*args, need_weights=need_weights, **kwargs)
    with hooked(graph) as actual:
        graph(*args, need_weights=need_weights, **kwargs)
    assert sorted(actual) == sorted(expected) == [""]  # out_proj's hook does not fire, as in torch
    assert_same("attention", actual[""], expected[""])


def test_graph_native_call_fires_every_hook():
    """Graph-native: every attention, layer and stack (and the model) is called through ``module(...)``."""
    model = GraphTransformer(8, 2, 2, 2, 16, dropout=0.0, dtype=DT).eval()
    watched = {name: m for name, m in model.named_modules()
               if isinstance(m, (GraphMultiheadAttention, GraphTransformerEncoderLayer, GraphTransformerDecoderLayer,
                                 GraphTransformerEncoder, GraphTransformerDecoder, GraphTransformer))}
    assert len(watched) == 1 + 2 + 4 + 2 * 1 + 2 * 2  # model, stacks, layers, self- and cross-attentions
    before, after = [], []
    handles = [m.register_forward_pre_hook(lambda m, args, name=name: before.append(name)) for name, m in
               watched.items()]
    handles += [m.register_forward_hook(lambda m, args, out, name=name: after.append(name)) for name, m in
                watched.items()]
    src, tgt = torch.randn(5, 8, dtype=DT), torch.randn(4, 8, dtype=DT)
    out = model(src, tgt, graphs.complete([3, 2]), graphs.causal([2, 2]), graphs.bipartite([3, 2], [2, 2]))
    for handle in handles:
        handle.remove()
    assert sorted(before) == sorted(after) == sorted(watched)
    assert before[:3] == ["", "encoder", "encoder.layers.0"] and after[-1] == ""
    assert out.shape == (4, 8)


def test_graph_native_hooks_see_the_layers_outputs():
    layer = GraphTransformerDecoderLayer(8, 2, 16, dropout=0.0, dtype=DT).eval()
    x, memory = torch.randn(4, 8, dtype=DT), torch.randn(5, 8, dtype=DT)
    self_edges, cross_edges = graphs.causal([2, 2]), graphs.bipartite([3, 2], [2, 2])
    with hooked(layer) as seen:
        out, weights = layer(x, memory, self_edges, cross_edges, return_attention_weights=True)
    assert torch.equal(seen[""][0], out)
    assert torch.equal(seen["self_attn"][1], weights["self"]) and torch.equal(seen["multihead_attn"][1],
                                                                              weights["cross"])
    assert torch.equal(seen["dropout2"], seen["multihead_attn"][0])  # eval: dropout is the identity
    assert "self_attn.out_proj" not in seen


@pytest.mark.parametrize("add_bias_kv, add_zero_attn", [(False, False), (True, False), (False, True), (True, True)])
def test_attention_hook_sees_every_edge(add_bias_kv, add_zero_attn):
    """q, k, v, the edges attention ran on (virtual sources appended), bias, weights, heads and output."""
    attention = GraphMultiheadAttention(8, 2, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn, dtype=DT).eval()
    seen = []
    handle = attention.register_attention_hook(lambda module, tensors: seen.append((module, tensors)))
    query, memory = torch.randn(3, 8, dtype=DT), torch.randn(4, 8, dtype=DT)
    edges = graphs.bipartite([2, 2], [2, 1])
    bias = torch.randn(edges.size(1), 2, dtype=DT)
    out, weights = attention(query, memory, memory, edges, bias, return_attention_weights=True)
    handle.remove()
    attention(query, memory, memory, edges, bias)
    assert len(seen) == 1 and seen[0][0] is attention
    tensors = seen[0][1]
    virtual = int(add_bias_kv) + int(add_zero_attn)
    assert tensors.key.shape == tensors.value.shape == (4 + virtual, 2, 4) and tensors.query.shape == (3, 2, 4)
    assert torch.equal(tensors.edge_index, attention.attention_graph(edges, 4, 3))
    assert tensors.edge_bias.shape == (edges.size(1) + 3 * virtual, 2)
    assert torch.equal(tensors.edge_bias[:edges.size(1)], bias) and not tensors.edge_bias[edges.size(1):].any()
    assert torch.equal(tensors.weights, weights) and torch.equal(tensors.output, out)
    source, target = tensors.edge_index
    scores = (tensors.query[target] * tensors.key[source]).sum(-1) * tensors.scale + tensors.edge_bias
    torch.testing.assert_close(edge_softmax(scores, target, 3), tensors.weights, rtol=0, atol=1e-15)
    heads = scatter(tensors.weights.unsqueeze(-1) * tensors.value[source], target, 0, dim_size=3, reduce="sum")
    torch.testing.assert_close(heads, tensors.aggregated, rtol=0, atol=1e-14)
    torch.testing.assert_close(attention.out_proj(tensors.aggregated.flatten(1)), out, rtol=0, atol=1e-14)


def test_attention_hook_switches_nothing_on():
    """On a fast backend the weights are there only when the call asks for them; the backend stays."""
    attention = GraphMultiheadAttention(8, 2, backend="chunked", dtype=DT).eval()
    seen = []
    attention.register_attention_hook(lambda module, tensors: seen.append(tensors.weights))
    x = torch.randn(5, 8, dtype=DT)
    attention(x, x, x, graphs.complete([5]))
    _, weights = attention(x, x, x, graphs.complete([5]), return_attention_weights=True)
    assert seen[0] is None and torch.equal(seen[1], weights) and attention.backend == "chunked"
    torch_style = attention(x.unsqueeze(1), x.unsqueeze(1), x.unsqueeze(1), need_weights=False)  # torch's call too
    assert len(seen) == 3 and torch_style[1] is None
