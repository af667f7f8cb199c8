import networkx as nx
import pytest
import torch

from gnn_transformer import GraphTransformerEncoder, GraphTransformerEncoderLayer, graphs, patterns
from gnn_transformer.analysis import attention_flow, attention_rollout, layered_graph, mixing_matrix, to_networkx

DT = torch.float64


def test_to_networkx_of_a_token_graph_and_of_attention():
    edge_index = graphs.causal([2, 1])
    plain = to_networkx(edge_index, 3, labels=["a", "b", "c"], lengths=[2, 1])
    assert sorted(plain.edges) == [(0, 0), (0, 1), (1, 1), (2, 2)]
    assert plain.nodes[2] == {"label": "c", "sequence": 1, "position": 0}
    weights = torch.tensor([[1.0, 1.0], [0.25, 0.75], [0.75, 0.25], [1.0, 1.0]])
    attention = to_networkx(edge_index, 3, weights)
    assert attention.edges[0, 1] == {"weight": 0.5, "heads": (0.25, 0.75)}
    assert to_networkx(edge_index, 3, weights, head=1).edges[0, 1]["weight"] == 0.75
    cross = to_networkx(graphs.bipartite([2], [1]), (2, 1), torch.tensor([0.4, 0.6]), labels=(["x", "y"], ["z"]))
    assert cross.edges[("source", 1), ("target", 0)]["weight"] == pytest.approx(0.6)
    assert cross.nodes["source", 0] == {"bipartite": 0, "label": "x"}
    with pytest.raises(ValueError, match="3 attention weights for 4 edges"):
        to_networkx(edge_index, 3, weights[:3])
    with pytest.raises(ValueError, match="head 5 does not exist"):
        to_networkx(edge_index, 3, weights, head=5)


def test_rollout_is_the_product_of_residual_mixing_matrices():
    n = 5
    edge_index = patterns.sliding_window([n], 1)
    generator = torch.Generator().manual_seed(0)
    layers = [torch.rand(edge_index.size(1), 3, generator=generator, dtype=DT) for _ in range(3)]
    dense = []
    for w in layers:  # by hand: head mean, (A + I) / 2, rows renormalised
        a = torch.zeros(n, n, dtype=DT)
        for (j, i), value in zip(edge_index.t().tolist(), w.mean(1).tolist()):
            a[i, j] = value
        a = (a + torch.eye(n, dtype=DT)) / 2
        dense.append(a / a.sum(1, keepdim=True))
    expected = dense[2] @ dense[1] @ dense[0]
    rollout = attention_rollout(edge_index, layers, n)
    assert torch.allclose(rollout, expected, atol=1e-15)
    assert torch.allclose(rollout.sum(1), torch.ones(n, dtype=DT))
    assert torch.allclose(mixing_matrix(edge_index, layers[0], n), dense[0])
    no_residual = attention_rollout(edge_index, layers, n, residual=False, head=0)
    assert no_residual[0, 4] == 0 and no_residual[0, 3] > 0  # three hops of a radius-1 window


def test_attention_flow_by_hand():
    """Two tokens, two layers; flows worked out by hand from the capacities."""
    edge_index = graphs.complete([2])  # edges 0->0, 1->0, 0->1, 1->1
    first = torch.tensor([0.5, 0.5, 0.0, 1.0], dtype=DT)  # token 0 averages, token 1 keeps itself
    second = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=DT)  # both read token 0
    flow = attention_flow(edge_index, [first, second], 2, residual=False)
    # to output 1: the only edge into (2, 1) is from (1, 0), capacity 1; into (1, 0) come 0.5 + 0.5
    assert flow.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    single = attention_flow(edge_index, [first], 2)  # one layer: the flow is the mixing weight itself
    assert torch.allclose(single, mixing_matrix(edge_index, first, 2))
    graph = layered_graph(edge_index, [first, second], 2, residual=False, labels=["a", "b"])
    assert graph.number_of_nodes() == 6 and graph.nodes[1, 0] == {"layer": 1, "token": 0, "label": "a"}
    assert graph.edges[(0, 1), (1, 0)] == {"weight": 0.5, "capacity": 0.5}
    assert not graph.has_edge((0, 0), (1, 1))  # zero weight: no edge


def test_rollout_and_flow_of_a_real_stack():
    lengths, n = [6], 6
    encoder = GraphTransformerEncoder(GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, dtype=DT), 3)
    edges = [patterns.sliding_window(lengths, 1), graphs.causal(lengths), graphs.complete(lengths)]
    _, weights = encoder(torch.randn(n, 8, dtype=DT), edges, return_attention_weights=True)
    rollout = attention_rollout(edges, weights, n)
    flow = attention_flow(edges, weights, n, targets=[0, 5])
    assert torch.allclose(rollout.sum(1), torch.ones(n, dtype=DT))
    assert (flow[[0, 5]] > 0).all() and (flow[1:5] == 0).all()
    assert (flow[[0, 5]] <= 1 + 1e-12).all()  # a token's inflow per layer is at most 1
    with pytest.raises(TypeError, match="one \\(num_edges, H\\) tensor per layer"):
        attention_rollout(edges[0], weights[0], n)
    layered = layered_graph(edges, weights, n)
    assert nx.is_directed_acyclic_graph(layered) and layered.number_of_nodes() == 4 * n
