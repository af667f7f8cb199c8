import pytest
import torch
from torch import nn

from gnn_transformer import GraphMultiheadAttention, graphs
from gnn_transformer.testing import assert_matches_torch, relative_difference, torch_reference_mode

from ..conftest import devices

DT = torch.float64


def padded(batch, length, features, batch_first, device="cpu"):
    x = torch.randn(batch, length, features, dtype=DT, device=device)
    return x if batch_first else x.transpose(0, 1)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("add_bias_kv, add_zero_attn", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch_with_key_padding(device, bias, add_bias_kv, add_zero_attn, batch_first):
    mha = nn.MultiheadAttention(12, 3, bias=bias, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn,
                                batch_first=batch_first, dtype=DT, device=device)
    graph = GraphMultiheadAttention.from_torch(mha)
    q, kv = padded(3, 4, 12, batch_first, device), padded(3, 6, 12, batch_first, device)
    padding = graphs.padding_mask([6, 1, 3]).to(device)
    for average in (True, False):
        assert_matches_torch(graph, mha, q, kv, kv, key_padding_mask=padding, average_attn_weights=average)


@pytest.mark.parametrize("kdim, vdim", [(5, 7), (12, 4)])
def test_separate_projection_weights(kdim, vdim):
    mha = nn.MultiheadAttention(12, 4, kdim=kdim, vdim=vdim, dtype=DT)
    graph = GraphMultiheadAttention.from_torch(mha)
    assert graph.in_proj_weight is None and graph.k_proj_weight.shape == (12, kdim)
    assert_matches_torch(graph, mha, padded(2, 3, 12, False), padded(2, 5, kdim, False), padded(2, 5, vdim, False))


def test_unbatched_inputs_and_per_head_masks():
    mha = nn.MultiheadAttention(8, 2, dtype=DT)
    graph = GraphMultiheadAttention.from_torch(mha)
    x = torch.randn(5, 8, dtype=DT)
    mask = torch.rand(2, 5, 5) < 0.3  # (H, L, S) per-head bool mask, unbatched
    mask[:, :, 0] = False  # every row keeps a key: torch's need_weights path would give NaN otherwise
    assert_matches_torch(graph, mha, x, x, x, attn_mask=mask, key_padding_mask=torch.tensor([0, 0, 0, 1, 0]).bool())
    float_mask = torch.randn(2 * 3, 4, 4, dtype=DT).masked_fill(torch.rand(6, 4, 4) < 0.3, float("-inf"))
    float_mask[..., 0] = 0.0
    xb = padded(3, 4, 8, False)
    assert_matches_torch(graph, mha, xb, xb, xb, attn_mask=float_mask, need_weights=False)
    assert_matches_torch(graph, mha, xb, xb, xb, attn_mask=float_mask, average_attn_weights=False)


def test_fully_masked_rows_give_zeros_where_torch_need_weights_gives_nan():
    mha = nn.MultiheadAttention(8, 2, dtype=DT)
    graph = GraphMultiheadAttention.from_torch(mha)
    x = padded(2, 3, 8, True).transpose(0, 1)
    padding = torch.tensor([[False, False, False], [True, True, True]])  # sequence 1 has no key at all
    with torch_reference_mode():
        torch_out, torch_weights = mha(x, x, x, key_padding_mask=padding)  # need_weights=True: NaN
        torch_sdpa_out, _ = mha(x, x, x, key_padding_mask=padding, need_weights=False)  # SDPA path: zeros
    out, weights = graph(x, x, x, key_padding_mask=padding)
    assert torch.isnan(torch_out[:, 1]).all() and torch.isnan(torch_weights[1]).all()
    assert torch.equal(weights[1], torch.zeros(3, 3, dtype=DT))
    bias_only = mha.out_proj.bias.expand(3, 8)  # zero attention, then out_proj
    assert torch.allclose(out[:, 1], bias_only) and torch.allclose(torch_sdpa_out[:, 1], bias_only)
    assert relative_difference(out, torch_sdpa_out) < 1e-12


def test_graph_native_call_and_virtual_sources():
    mha = GraphMultiheadAttention(8, 2, add_bias_kv=True, add_zero_attn=True, dtype=DT)
    x = torch.randn(4, 8, dtype=DT)
    edge_index = graphs.causal([4])
    out, weights = mha(x, x, x, edge_index, return_attention_weights=True)
    assert out.shape == (4, 8)
    full = mha.attention_graph(edge_index, 4, 4)
    assert full.size(1) == edge_index.size(1) + 2 * 4 and weights.shape == (full.size(1), 2)
    assert full[:, edge_index.size(1):].tolist() == [[4, 4, 4, 4, 5, 5, 5, 5], [0, 1, 2, 3, 0, 1, 2, 3]]
    sums = torch.zeros(4, 2, dtype=DT).index_add_(0, full[1], weights)
    assert torch.allclose(sums, torch.ones(4, 2, dtype=DT))


def test_graph_native_matches_dense_call_on_ragged_batch():
    mha = GraphMultiheadAttention(8, 2, dtype=DT, batch_first=True)
    lengths = torch.tensor([3, 1, 4])
    x = torch.randn(3, 4, 8, dtype=DT)
    padding = graphs.padding_mask(lengths)
    dense_out, _ = mha(x, x, x, key_padding_mask=padding)
    nodes = graphs.to_nodes(x, lengths)
    graph_out = mha(nodes, nodes, nodes, edge_index=graphs.complete(lengths))
    assert relative_difference(graph_out, graphs.to_nodes(dense_out, lengths)) < 1e-12


def test_is_causal_flag():
    mha = GraphMultiheadAttention(8, 2, dtype=DT)
    x = padded(2, 4, 8, False)
    with pytest.raises(RuntimeError, match="is_causal=True needs attn_mask"):
        mha(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="not causal"):
        mha(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.bool), is_causal=True)
    causal = nn.Transformer.generate_square_subsequent_mask(4, dtype=DT)
    torch_mha = mha.to_torch()
    assert_matches_torch(mha, torch_mha, x, x, x, attn_mask=causal, is_causal=True, need_weights=False)


def test_state_dict_round_trip_both_ways():
    torch_mha = nn.MultiheadAttention(8, 2, add_bias_kv=True, kdim=3, vdim=5)
    graph = GraphMultiheadAttention.from_torch(torch_mha)
    assert graph.state_dict().keys() == torch_mha.state_dict().keys()
    back = graph.to_torch()
    for key, value in torch_mha.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    fresh = GraphMultiheadAttention(8, 2, add_bias_kv=True, kdim=3, vdim=5)
    fresh.load_state_dict(torch_mha.state_dict(), strict=True)
    torch_mha.load_state_dict(fresh.state_dict(), strict=True)


def test_initialisation_matches_torch_layout():
    graph = GraphMultiheadAttention(8, 2)
    assert graph.in_proj_weight.shape == (24, 8) and torch.equal(graph.in_proj_bias, torch.zeros(24))
    assert torch.equal(graph.out_proj.bias, torch.zeros(8))
    assert "GraphMultiheadAttention(" in repr(graph) and "out_proj" in repr(graph)


def test_bad_inputs():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        GraphMultiheadAttention(10, 3)
    mha = GraphMultiheadAttention(8, 2)
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="query has 6 features per node but the module expects 8"):
        mha(torch.randn(4, 6), x, x, graphs.complete([4]))
    with pytest.raises(ValueError, match="refers to source node 4 but only 4 source tokens"):
        mha(x, x, x, torch.tensor([[4], [0]]))
    with pytest.raises(ValueError, match="must have the same batch and length"):
        mha(torch.randn(4, 2, 8), torch.randn(4, 2, 8), torch.randn(5, 2, 8))
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(2, 3\) but should be"):
        mha(torch.randn(4, 2, 8), torch.randn(4, 2, 8), torch.randn(4, 2, 8),
            key_padding_mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask must be a bool or floating-point"):
        mha(torch.randn(4, 2, 8), torch.randn(4, 2, 8), torch.randn(4, 2, 8), attn_mask=torch.zeros(4, 4).long())
    with pytest.raises(TypeError, match="expects a torch.nn.modules.activation.MultiheadAttention"):
        GraphMultiheadAttention.from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown backend"):
        GraphMultiheadAttention(8, 2, backend="nope")


class _Rotate(nn.Module):
    """A toy per-node transform: rotate each head by an angle proportional to the position."""

    def forward(self, x, position):
        angle = position.to(x.dtype)[:, None, None] * 0.3
        first, second = x[..., ::2], x[..., 1::2]
        return torch.cat([first * angle.cos() - second * angle.sin(), first * angle.sin() + second * angle.cos()], -1)


def test_qk_transform_is_applied_per_node_and_needs_positions():
    plain = GraphMultiheadAttention(8, 2, dtype=DT)
    rotated = GraphMultiheadAttention(8, 2, dtype=DT, qk_transform=_Rotate())
    rotated.load_state_dict(plain.state_dict())
    x, edge_index, position = torch.randn(4, 8, dtype=DT), graphs.complete([4]), torch.arange(4)
    with pytest.raises(ValueError, match="needs (query|key)_position"):
        rotated(x, x, x, edge_index)
    out = rotated(x, x, x, edge_index, query_position=position, key_position=position)
    assert relative_difference(out, plain(x, x, x, edge_index)) > 1e-3
    shifted = rotated(x, x, x, edge_index, query_position=position + 5, key_position=position + 5)
    assert relative_difference(out, shifted) < 1e-12  # the toy rotation only sees relative positions


def test_key_value_cache_gives_the_full_computation_one_node_at_a_time():
    from gnn_transformer.core.attention import KeyValueCache

    mha = GraphMultiheadAttention(8, 2, dtype=DT, add_bias_kv=True)
    x = torch.randn(5, 8, dtype=DT)
    full = mha(x, x, x, graphs.causal([5]))
    cache, steps = KeyValueCache(), []
    for t in range(5):
        edges = torch.stack([torch.arange(t + 1), torch.zeros(t + 1, dtype=torch.long)])  # all seen -> new node
        steps.append(mha(x[t:t + 1], x[t:t + 1], x[t:t + 1], edges, cache=cache))
    assert cache.num_sources == 5
    assert relative_difference(torch.cat(steps), full) < 1e-12
    static = KeyValueCache(static=True)
    memory = torch.randn(3, 8, dtype=DT)
    first = mha(x[:1], memory, memory, graphs.bipartite([3], [1]), cache=static)
    again = mha(x[:1], None, None, graphs.bipartite([3], [1]), cache=static)
    assert torch.equal(first, again) and static.num_sources == 3


def test_to_torch_refuses_what_torch_cannot_hold():
    with pytest.raises(ValueError, match="qk_transform or a non-default scale"):
        GraphMultiheadAttention(8, 2, scale=1.0).to_torch()
    with pytest.raises(ValueError, match="qk_transform or a non-default scale"):
        GraphMultiheadAttention(8, 2, qk_transform=_Rotate()).to_torch()
    assert isinstance(GraphMultiheadAttention(8, 2, scale=0.5).to_torch(), nn.MultiheadAttention)  # 1/sqrt(4)
