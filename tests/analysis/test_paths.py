import math

import networkx as nx
import pytest
import torch

from gnn_transformer import graphs, patterns
from gnn_transformer.analysis import max_path_length, reachable, shortest_path_lengths


def networkx_max_path(edge_index, n):
    """Longest finite shortest path j -> i (i != j), by networkx breadth-first search."""
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edge_index.t().tolist())
    return max((d for _, lengths in nx.all_pairs_shortest_path_length(graph) for d in lengths.values()), default=0)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 17, 40])
def test_max_path_length_of_the_papers_graphs(n):
    assert max_path_length(graphs.complete([n]), n) == (1 if n > 1 else 0)
    assert max_path_length(graphs.causal([n]), n) == (1 if n > 1 else 0)
    assert max_path_length(patterns.chain([n]), n) == n - 1
    for radius in (1, 2, 3, 5):
        assert max_path_length(patterns.sliding_window([n], radius), n) == math.ceil((n - 1) / radius)


def test_max_path_length_matches_networkx_on_random_graphs():
    generator = torch.Generator().manual_seed(0)
    for n, num_edges in [(6, 8), (12, 20), (30, 45), (30, 200)]:
        edge_index = torch.randint(n, (2, num_edges), generator=generator)
        assert max_path_length(edge_index, n) == networkx_max_path(edge_index, n)


def test_max_path_length_of_batches_blocks_and_layer_lists():
    lengths = [3, 12]  # other sequences of the batch do not count as unreachable
    assert max_path_length(patterns.sliding_window(lengths, 2), 15) == math.ceil(11 / 2)
    assert max_path_length(patterns.block_local([12], 4), 12) == 1  # blocks never talk to each other
    assert max_path_length(torch.empty(2, 0, dtype=torch.long), 5) == 0
    for n in (5, 9, 10, 27, 28, 100):  # dilated causal convolutions: ceil(log_k n) layers
        layers = [patterns.convolution([n], 3, dilation=3 ** level) for level in range(6)]
        assert max_path_length(layers, n) == math.ceil(math.log(n, 3) - 1e-9)
    sparse = [patterns.strided([30], 5, part, causal=True) for part in ("local", "strided")]
    assert max_path_length(sparse, 30) == 2  # the Sparse Transformer's two-step factorisation
    assert max_path_length(sparse[::-1], 30) == 2
    with pytest.raises(ValueError, match="empty list"):
        max_path_length([], 4)


def test_shortest_path_lengths_and_reachable():
    edge_index = patterns.from_networkx(nx.DiGraph([(0, 1), (1, 2), (3, 2)]))
    distance = shortest_path_lengths(edge_index, 4)
    assert distance.tolist() == [[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, 1], [-1, -1, -1, 0]]
    assert shortest_path_lengths(edge_index, 4, max_length=1)[2, 0] == -1
    assert torch.equal(reachable(edge_index, 4), distance >= 0)
    assert torch.equal(reachable(edge_index, 4, num_layers=1), (distance >= 0) & (distance <= 1))
