import math

import pytest
import torch
import torch.nn.functional as F

from gnn_transformer import graphs
from gnn_transformer.core.functional import available_backends, edge_softmax, graph_attention
from gnn_transformer.testing import relative_difference, torch_reference_mode

DT = torch.float64


def dense_sdpa(q, k, v, edge_index, edge_bias=None, scale=None):
    """torch's SDPA on the whole node set with the equivalent additive mask (H, T, S)."""
    mask = graphs.edges_to_mask(edge_index, q.size(0), k.size(0),
                                torch.zeros(edge_index.size(1), 1, dtype=q.dtype) if edge_bias is None else edge_bias)
    with torch_reference_mode():
        out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                             attn_mask=mask, scale=scale)
    return out.transpose(0, 1)  # (T, H, C)


def random_graph(num_sources, num_targets, p=0.4, generator=None):
    keep = torch.rand(num_targets, num_sources, generator=generator) < p
    target, source = keep.nonzero(as_tuple=True)
    return torch.stack([source, target])


def test_tiny_example_by_hand():
    """Two keys with scores 0 and ln 3 -> weights 1/4, 3/4."""
    q = torch.tensor([[[1.0]]], dtype=DT)
    k = torch.tensor([[[0.0]], [[math.log(3.0)]]], dtype=DT)
    v = torch.tensor([[[4.0]], [[8.0]]], dtype=DT)
    out, weights = graph_attention(q, k, v, torch.tensor([[0, 1], [0, 0]]), scale=1.0, return_attention_weights=True)
    assert torch.allclose(weights[:, 0], torch.tensor([0.25, 0.75], dtype=DT))
    assert torch.allclose(out, torch.tensor([[[7.0]]], dtype=DT))


@pytest.mark.parametrize("kind", ["complete", "causal", "random", "bipartite"])
def test_matches_dense_sdpa_with_equivalent_mask(kind):
    lengths, tgt_lengths = [5, 1, 3], [2, 4, 1]
    edge_index = {"complete": graphs.complete(lengths), "causal": graphs.causal(lengths),
                  "random": random_graph(9, 9), "bipartite": graphs.bipartite(lengths, tgt_lengths)}[kind]
    num_targets = 7 if kind == "bipartite" else 9
    q = torch.randn(num_targets, 3, 4, dtype=DT, requires_grad=True)
    k = torch.randn(9, 3, 4, dtype=DT, requires_grad=True)
    v = torch.randn(9, 3, 5, dtype=DT, requires_grad=True)
    bias = torch.randn(edge_index.size(1), 3, dtype=DT, requires_grad=True)
    out = graph_attention(q, k, v, edge_index, bias)
    expected = dense_sdpa(q, k, v, edge_index, bias)
    assert relative_difference(out, expected) < 1e-12
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v, bias), grad)
    want = torch.autograd.grad(expected, (q, k, v, bias), grad)
    for g, w in zip(got, want):
        assert relative_difference(g, w) < 1e-12


def test_target_without_edges_gets_zero_and_no_nan_gradient():
    q = torch.randn(3, 2, 4, dtype=DT, requires_grad=True)
    k = torch.randn(2, 2, 4, dtype=DT, requires_grad=True)
    v = torch.randn(2, 2, 4, dtype=DT, requires_grad=True)
    edge_index = torch.tensor([[0, 1], [0, 0]])  # targets 1 and 2 receive nothing
    out = graph_attention(q, k, v, edge_index)
    assert torch.equal(out[1:], torch.zeros(2, 2, 4, dtype=DT))
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.equal(q.grad[1:], torch.zeros(2, 2, 4, dtype=DT))


def test_head_blocked_by_minus_inf_bias_gets_zero():
    q, k, v = (torch.randn(2, 2, 3, dtype=DT, requires_grad=True) for _ in range(3))
    edge_index = graphs.complete([2])
    bias = torch.zeros(4, 2, dtype=DT)
    bias[:, 0] = float("-inf")  # head 0 sees nothing
    out, weights = graph_attention(q, k, v, edge_index, bias, return_attention_weights=True)
    assert torch.equal(out[:, 0], torch.zeros(2, 3, dtype=DT))
    assert torch.equal(weights[:, 0], torch.zeros(4, dtype=DT))
    assert torch.allclose(out[:, 1], dense_sdpa(q, k, v, edge_index)[:, 1])
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_softmax_is_exact_and_stable():
    score = torch.tensor([[1000.0], [1000.0], [-1000.0]], dtype=DT)
    weights = edge_softmax(score, torch.tensor([0, 0, 1]), 2)
    assert weights[:, 0].tolist() == [0.5, 0.5, 1.0]  # no epsilon in the denominator, no overflow


def test_weights_sum_to_one_per_target():
    edge_index = graphs.causal([4, 3])
    q, k, v = (torch.randn(7, 2, 4) for _ in range(3))
    _, weights = graph_attention(q, k, v, edge_index, return_attention_weights=True)
    sums = torch.zeros(7, 2).index_add_(0, edge_index[1], weights)
    assert torch.allclose(sums, torch.ones(7, 2))


def test_scale_argument():
    q, k, v = (torch.randn(4, 1, 8, dtype=DT) for _ in range(3))
    edge_index = graphs.complete([4])
    assert relative_difference(graph_attention(q, k, v, edge_index, scale=1.0),
                               dense_sdpa(q, k, v, edge_index, scale=1.0)) < 1e-12
    assert relative_difference(graph_attention(q, k, v, edge_index, scale=1.0),
                               graph_attention(q, k, v, edge_index)) > 1e-3


def test_dropout_zeroes_and_rescales_weights():
    torch.manual_seed(1)
    q, k, v = (torch.randn(6, 2, 4) for _ in range(3))
    edge_index = graphs.complete([6])
    _, clean = graph_attention(q, k, v, edge_index, return_attention_weights=True)
    _, dropped = graph_attention(q, k, v, edge_index, dropout_p=0.5, return_attention_weights=True)
    kept = dropped != 0
    assert 0 < kept.float().mean() < 1
    assert torch.allclose(dropped[kept], 2 * clean[kept])


def test_bad_inputs_name_the_problem():
    q, k, v = torch.randn(3, 2, 4), torch.randn(5, 2, 4), torch.randn(5, 2, 4)
    good = graphs.complete([3])
    with pytest.raises(ValueError, match="refers to source node 5 but only 5 source tokens"):
        graph_attention(q, k, v, torch.tensor([[5], [0]]))
    with pytest.raises(ValueError, match="refers to target node 3 but only 3 target tokens"):
        graph_attention(q, k, v, torch.tensor([[0], [3]]))
    with pytest.raises(ValueError, match="negative"):
        graph_attention(q, k, v, torch.tensor([[-1], [0]]))
    with pytest.raises(ValueError, match=r"shape \(2, num_edges\)"):
        graph_attention(q, k, v, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer node indices"):
        graph_attention(q, k, v, good.float())
    with pytest.raises(ValueError, match="same head size"):
        graph_attention(q, torch.randn(5, 2, 3), v, good)
    with pytest.raises(ValueError, match="same number of heads"):
        graph_attention(q, torch.randn(5, 1, 4), v, good)
    with pytest.raises(ValueError, match="one row per source token"):
        graph_attention(q, k, torch.randn(4, 2, 4), good)
    with pytest.raises(ValueError, match=r"num_heads, head_dim"):
        graph_attention(q[:, 0], k, v, good)
    with pytest.raises(ValueError, match=r"edge_bias must have shape \(num_edges, num_heads\) = \(9, 2\)"):
        graph_attention(q, k, v, good, torch.randn(9, 3))
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        graph_attention(q, k, v, good, backend="fast")


def test_reference_backend_is_listed():
    assert "reference" in available_backends()
