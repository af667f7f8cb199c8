import pytest
import torch
from torch_geometric.data import Batch

from gnn_transformer import GraphDecoderModel, GraphMultiheadAttention, graphs
from gnn_transformer.variants.linear_attention import (GraphLinearAttention, RecurrentState, run_recurrent,
                                              to_linear_attention)
from gnn_transformer.testing import relative_difference
from gnn_transformer.variants import GraphVariantModel

DT = torch.float64


def dense_linear_attention(attention, x, causal):
    """Plain torch: (phi(Q) phi(K)^T, masked) V, normalised per row, for one sequence x (L, E)."""
    heads, c = attention.num_heads, attention.head_dim
    w, b = attention.in_proj_weight, attention.in_proj_bias
    q, k, v = (x @ w.T + b).chunk(3, dim=-1)
    q, k, v = (t.reshape(-1, heads, c).transpose(0, 1) for t in (q, k, v))  # (H, L, C)
    phi_q, phi_k = attention.feature_map(q.transpose(0, 1)).transpose(0, 1), \
        attention.feature_map(k.transpose(0, 1)).transpose(0, 1)
    kernel = phi_q @ phi_k.transpose(-1, -2)  # (H, L, L)
    if causal:
        kernel = kernel.tril()
    out = (kernel @ v) / kernel.sum(-1, keepdim=True)
    return attention.out_proj(out.transpose(0, 1).reshape(x.size(0), -1))


@pytest.mark.parametrize("feature_map", ["elu", "t2r"])
@pytest.mark.parametrize("causal", [True, False])
def test_message_passing_equals_dense_kernelised_attention(feature_map, causal):
    attention = GraphLinearAttention(8, 2, feature_map=feature_map, dtype=DT)
    if feature_map == "t2r":
        with torch.no_grad():
            attention.feature_map.bias.abs_().add_(0.5)  # keep every row's weights positive
    x = torch.randn(6, 8, dtype=DT)
    edges = (graphs.causal if causal else graphs.complete)([6])
    out, weights = attention(x, x, x, edges, return_attention_weights=True)
    assert relative_difference(out, dense_linear_attention(attention, x, causal)) < 1e-12
    assert torch.allclose(torch.zeros(6, 2, dtype=DT).index_add(0, edges[1], weights), torch.ones(6, 2, dtype=DT))


@pytest.mark.parametrize("feature_map", ["elu", "t2r"])
def test_recurrent_steps_equal_the_causal_graph(feature_map):
    attention = GraphLinearAttention(8, 2, feature_map=feature_map, num_features=5, dtype=DT)
    x = torch.randn(3, 7, 8, dtype=DT)  # 3 sequences of 7 tokens
    graph = attention(x.reshape(21, 8), x.reshape(21, 8), x.reshape(21, 8), graphs.causal([7, 7, 7]))
    state = RecurrentState()
    steps = []
    features = 5 if feature_map == "t2r" else 4  # elu: one feature per channel of the head
    for t in range(7):
        steps.append(attention.forward_graph(x[:, t], x[:, t], x[:, t], cache=state))
        assert state.S.shape == (3, 2, features, 4) and state.z.shape == (3, 2, features)  # constant memory
    assert relative_difference(torch.stack(steps, 1).reshape(21, 8), graph) < 1e-12


@pytest.mark.parametrize("positions", ["learned", "rotary", "sinusoidal"])
def test_model_as_rnn_equals_model_on_the_causal_graph(positions):
    """The same model, run as message passing on causal graphs and as an RNN, gives the same logits."""
    model = GraphVariantModel(30, 16, 4, num_layers=2, dim_feedforward=24, dropout=0.0, positions=positions,
                              dtype=DT)
    to_linear_attention(model)
    lengths = torch.tensor([6, 3, 1])
    tokens = torch.randint(30, (3, 6))
    batch = Batch.from_data_list([graphs.sequence_data(t[:n], "causal") for t, n in zip(tokens, lengths.tolist())])
    real = torch.arange(6)[None, :] < lengths[:, None]
    assert relative_difference(run_recurrent(model, tokens)[real], model(batch)) < 1e-10


def test_softmax_model_converted_in_place_keeps_its_projections():
    model = GraphDecoderModel(20, d_model=8, nhead=2, num_layers=2, dim_feedforward=16, dropout=0.0, dtype=DT)
    before = model.encoder.layers[0].self_attn.in_proj_weight.clone()
    to_linear_attention(model, feature_map="t2r", num_features=6)
    attention = model.encoder.layers[0].self_attn
    assert isinstance(attention, GraphLinearAttention) and torch.equal(attention.in_proj_weight, before)
    tokens = torch.randint(20, (2, 5))
    batch = Batch.from_data_list([graphs.sequence_data(t, "causal") for t in tokens])
    assert relative_difference(run_recurrent(model, tokens).reshape(10, -1), model(batch)) < 1e-10


def test_bad_use():
    with pytest.raises(ValueError, match="feature_map should be"):
        GraphLinearAttention(8, 2, feature_map="favor")
    with pytest.raises(ValueError, match="neither attention dropout"):
        GraphLinearAttention(8, 2, dropout=0.1)
    attention = GraphLinearAttention(8, 2)
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="no scores to add an edge_bias"):
        attention(x, x, x, graphs.complete([3]), torch.zeros(9, 2))
    state = RecurrentState()
    attention.forward_graph(x, x, x, cache=state)
    with pytest.raises(ValueError, match="one node per sequence: 3 sequences, 2 nodes"):
        attention.forward_graph(x[:2], x[:2], x[:2], cache=state)
    model = GraphVariantModel(10, 8, 2, num_layers=1, dim_feedforward=8)
    with pytest.raises(ValueError, match="call to_linear_attention"):
        run_recurrent(model, torch.zeros(1, 3, dtype=torch.long))
    assert isinstance(GraphLinearAttention.from_softmax(GraphMultiheadAttention(8, 2)), GraphLinearAttention)


def test_no_targets_and_out_proj_applied_as_the_attention_does():
    """Zero target nodes give a (0, E) output; out_proj is applied functionally, as in GraphMultiheadAttention
    (and torch), so its forward hook fires in neither."""
    attention = GraphLinearAttention(8, 2)
    fired = []
    attention.out_proj.register_forward_hook(lambda *_: fired.append(True))
    nothing = torch.randn(0, 8)
    assert attention(nothing, nothing, nothing, torch.zeros(2, 0, dtype=torch.long)).shape == (0, 8)
    x = torch.randn(3, 8)
    assert attention(x, x, x, torch.tensor([[0, 1, 2], [0, 1, 2]])).shape == (3, 8)
    assert not fired
