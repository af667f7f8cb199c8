"""Same seed, same initial weights: every graph module draws exactly what its torch counterpart draws.

``torch.manual_seed(s); GraphX(...)`` and ``torch.manual_seed(s); nn.X(...)`` must give equal
``state_dict`` tensors (``torch.equal``, not a tolerance) and leave the random number generator in
the same state (the next ``torch.rand`` agrees).  Configurations are drawn at random (hypothesis).
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from gnn_transformer import (
    GraphMultiheadAttention,
    GraphTransformer,
    GraphTransformerDecoder,
    GraphTransformerDecoderLayer,
    GraphTransformerEncoder,
    GraphTransformerEncoderLayer,
)


def assert_same_draws(build_graph, build_torch, seed: int) -> None:
    """Both constructors under ``seed``: equal parameters and buffers, in the same order, and the same RNG state."""
    torch.manual_seed(seed)
    graph = build_graph()
    after_graph = torch.rand(4)
    torch.manual_seed(seed)
    reference = build_torch()
    after_torch = torch.rand(4)
    graph_state, torch_state = graph.state_dict(), reference.state_dict()
    assert list(graph_state) == list(torch_state)
    differing = [key for key in torch_state if not torch.equal(graph_state[key], torch_state[key])]
    assert not differing, f"initial values differ from torch's under the same seed: {differing}"
    assert [name for name, _ in graph.named_parameters()] == [name for name, _ in reference.named_parameters()]
    assert torch.equal(after_graph, after_torch), "construction consumed a different number of random draws"


seeds = st.integers(0, 2**31 - 1)
heads = st.sampled_from([1, 2, 4])
head_sizes = st.integers(1, 4)
layer_options = st.fixed_dictionaries({
    "dim_feedforward": st.integers(1, 24),
    "activation": st.sampled_from(["relu", "gelu", F.relu, F.gelu]),
    "norm_first": st.booleans(),
    "bias": st.booleans(),
    "batch_first": st.booleans(),
    "layer_norm_eps": st.sampled_from([1e-5, 1e-6]),
})


@given(seed=seeds, num_heads=heads, head_size=head_sizes, bias=st.booleans(), add_bias_kv=st.booleans(),
       add_zero_attn=st.booleans(), kdim=st.one_of(st.none(), st.integers(1, 9)),
       vdim=st.one_of(st.none(), st.integers(1, 9)), batch_first=st.booleans())
def test_attention_draws_torchs_initial_weights(seed, num_heads, head_size, bias, add_bias_kv, add_zero_attn,
                                                kdim, vdim, batch_first):
    args = dict(embed_dim=num_heads * head_size, num_heads=num_heads, bias=bias, add_bias_kv=add_bias_kv,
                add_zero_attn=add_zero_attn, kdim=kdim, vdim=vdim, batch_first=batch_first)
    assert_same_draws(lambda: GraphMultiheadAttention(**args), lambda: nn.MultiheadAttention(**args), seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_draws_torchs_initial_weights_in_every_dtype(dtype):
    assert_same_draws(lambda: GraphMultiheadAttention(12, 3, dtype=dtype, add_bias_kv=True),
                      lambda: nn.MultiheadAttention(12, 3, dtype=dtype, add_bias_kv=True), seed=7)


@given(seed=seeds, nhead=heads, head_size=head_sizes, options=layer_options, decoder=st.booleans())
def test_layers_draw_torchs_initial_weights(seed, nhead, head_size, options, decoder):
    graph_class, torch_class = ((GraphTransformerDecoderLayer, nn.TransformerDecoderLayer) if decoder
                                else (GraphTransformerEncoderLayer, nn.TransformerEncoderLayer))
    d_model = nhead * head_size
    assert_same_draws(lambda: graph_class(d_model, nhead, **options), lambda: torch_class(d_model, nhead, **options),
                      seed)


@given(seed=seeds, options=layer_options, num_layers=st.integers(1, 3), with_norm=st.booleans(),
       decoder=st.booleans())
def test_stacks_draw_torchs_initial_weights(seed, options, num_layers, with_norm, decoder):
    graph_classes = (GraphTransformerDecoderLayer, GraphTransformerDecoder) if decoder else (
        GraphTransformerEncoderLayer, GraphTransformerEncoder)
    torch_classes = (nn.TransformerDecoderLayer, nn.TransformerDecoder) if decoder else (
        nn.TransformerEncoderLayer, nn.TransformerEncoder)

    def build(layer_class, stack_class):
        layer = layer_class(8, 2, **options)
        norm = nn.LayerNorm(8, bias=options["bias"]) if with_norm else None
        return stack_class(layer, num_layers, norm)

    assert_same_draws(lambda: build(*graph_classes), lambda: build(*torch_classes), seed)


def test_transformer_with_default_sizes_draws_torchs_initial_weights():
    assert_same_draws(GraphTransformer, nn.Transformer, seed=0)


@given(seed=seeds, nhead=heads, head_size=head_sizes, options=layer_options,
       num_encoder_layers=st.integers(1, 3), num_decoder_layers=st.integers(1, 3))
def test_transformer_draws_torchs_initial_weights(seed, nhead, head_size, options, num_encoder_layers,
                                                  num_decoder_layers):
    args = dict(d_model=nhead * head_size, nhead=nhead, num_encoder_layers=num_encoder_layers,
                num_decoder_layers=num_decoder_layers, dropout=0.0, **options)
    assert_same_draws(lambda: GraphTransformer(**args), lambda: nn.Transformer(**args), seed)


@given(seed=seeds, bias=st.booleans(), add_bias_kv=st.booleans(), kdim=st.one_of(st.none(), st.integers(1, 9)))
def test_reset_parameters_redraws_as_torch_does(seed, bias, add_bias_kv, kdim):
    """``reset_parameters`` re-draws what torch's ``_reset_parameters`` re-draws: not ``out_proj.weight``."""
    args = dict(embed_dim=8, num_heads=2, bias=bias, add_bias_kv=add_bias_kv, kdim=kdim)
    graph, reference = GraphMultiheadAttention(**args), nn.MultiheadAttention(**args)
    graph.load_state_dict(reference.state_dict())
    out_proj_before = graph.out_proj.weight.detach().clone()
    torch.manual_seed(seed)
    graph.reset_parameters()
    after_graph = torch.rand(4)
    torch.manual_seed(seed)
    reference._reset_parameters()
    after_torch = torch.rand(4)
    for key, value in reference.state_dict().items():
        assert torch.equal(graph.state_dict()[key], value), key
    assert torch.equal(graph.out_proj.weight, out_proj_before)
    assert torch.equal(after_graph, after_torch)


def test_torch_named_reset_is_the_public_one():
    torch.manual_seed(1)
    graph = GraphMultiheadAttention(8, 2)
    torch.manual_seed(2)
    graph._reset_parameters()
    by_torch_name = {key: value.clone() for key, value in graph.state_dict().items()}
    torch.manual_seed(2)
    graph.reset_parameters()
    assert all(torch.equal(graph.state_dict()[key], value) for key, value in by_torch_name.items())
    torch.manual_seed(1)
    assert not torch.equal(GraphMultiheadAttention(8, 2).in_proj_weight, graph.in_proj_weight)
