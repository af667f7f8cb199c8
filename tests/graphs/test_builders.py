import itertools

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from gnn_transformer import graphs


def brute_force(lengths, allowed, tgt_lengths=None):
    """Edges (j, i) built pair by pair, sorted by target then source."""
    tgt_lengths = lengths if tgt_lengths is None else tgt_lengths
    edges, src_offset, tgt_offset = [], 0, 0
    for s_len, t_len in zip(lengths, tgt_lengths):
        for i, j in itertools.product(range(t_len), range(s_len)):
            if allowed(j, i):
                edges.append((src_offset + j, tgt_offset + i))
        src_offset, tgt_offset = src_offset + s_len, tgt_offset + t_len
    edges.sort(key=lambda e: (e[1], e[0]))
    return torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t()


@pytest.mark.parametrize("lengths", [[1], [3], [2, 1, 4], [5, 0, 2]])
def test_complete_matches_brute_force(lengths):
    assert torch.equal(graphs.complete(lengths), brute_force(lengths, lambda j, i: True))


@pytest.mark.parametrize("lengths", [[1], [4], [3, 1, 2], [2, 0, 3]])
def test_causal_matches_brute_force(lengths):
    assert torch.equal(graphs.causal(lengths), brute_force(lengths, lambda j, i: j <= i))


@pytest.mark.parametrize("src, tgt", [([1], [1]), ([3, 1], [2, 4]), ([2, 0, 1], [1, 2, 0])])
def test_bipartite_matches_brute_force(src, tgt):
    assert torch.equal(graphs.bipartite(src, tgt), brute_force(src, lambda j, i: True, tgt))


def test_small_graphs_by_eye():
    assert graphs.complete([2, 1]).tolist() == [[0, 1, 0, 1, 2], [0, 0, 1, 1, 2]]
    assert graphs.causal([3]).tolist() == [[0, 0, 1, 0, 1, 2], [0, 1, 1, 2, 2, 2]]
    assert graphs.bipartite([2, 1], [1, 2]).tolist() == [[0, 1, 2, 2], [0, 0, 1, 2]]


def test_edge_counts():
    lengths = torch.tensor([3, 1, 5])
    assert graphs.num_edges("complete", lengths) == graphs.complete(lengths).size(1) == 35
    assert graphs.num_edges("causal", lengths) == graphs.causal(lengths).size(1) == 22
    assert graphs.num_edges("bipartite", lengths, [2, 2, 2]) == graphs.bipartite(lengths, [2, 2, 2]).size(1) == 18


def test_lengths_helpers():
    assert graphs.lengths_to_ptr([2, 3]).tolist() == [0, 2, 5]
    assert graphs.batch_vector([2, 1]).tolist() == [0, 0, 1]
    assert graphs.positions([2, 3]).tolist() == [0, 1, 0, 1, 2]
    assert graphs.padding_mask([1, 3]).tolist() == [[False, True, True], [False, False, False]]


def test_to_nodes_and_back():
    x = torch.randn(3, 4, 2)
    lengths = [4, 1, 2]
    nodes = graphs.to_nodes(x, lengths)
    assert nodes.shape == (7, 2)
    padded = graphs.to_padded(nodes, lengths)
    assert torch.equal(padded[0], x[0]) and torch.equal(padded[1, :1], x[1, :1])
    assert torch.equal(padded[1, 1:], torch.zeros(3, 2))
    assert torch.equal(graphs.to_nodes(x.transpose(0, 1), lengths, batch_first=False), nodes)


@pytest.mark.parametrize("bad, error, message", [
    ([], ValueError, "lengths is empty"),
    ([2, -1], ValueError, "non-negative"),
    ([[1, 2]], TypeError, r"\[1, 2\] \(list\) is not an integer"),
    (torch.tensor([[1, 2]]), ValueError, r"1-D \(one length per sequence\), got shape \(1, 2\)"),
    (torch.tensor([1.5]), TypeError, "must hold integers, got a tensor of dtype torch.float32"),
    (5, TypeError, r"got the single number 5: for one sequence of 5 tokens pass \[5\]"),
    (torch.tensor(5), ValueError, r"got shape \(\): for one sequence of 5 tokens pass \[5\]"),
    ([True, True], TypeError, r"True \(bool\) is not an integer"),
    ([torch.tensor(True)], TypeError, "is not an integer"),
    ([2.0, 3.0], TypeError, r"2.0 \(float\) is not an integer"),
    ([torch.tensor(2.5)], TypeError, "is not an integer"),
    ({2, 3}, TypeError, "got set"),
    ({2: 1}, TypeError, "got dict"),
    ("23", TypeError, "got str"),
    (None, TypeError, "got NoneType"),
])
def test_bad_lengths(bad, error, message):
    """Each refusal names the argument and what it expected; nothing is truncated or guessed."""
    with pytest.raises(error, match=message):
        graphs.complete(bad)
    with pytest.raises(error, match="src_lengths"):
        graphs.bipartite(bad, [1])


def test_lengths_of_every_integer_kind_are_accepted():
    numpy = pytest.importorskip("numpy")
    expected = graphs.complete([2, 1])
    for lengths in ((2, 1), range(2, 0, -1), numpy.array([2, 1]), [numpy.int64(2), torch.tensor(1)],
                    torch.tensor([2, 1], dtype=torch.int32)):
        assert torch.equal(graphs.complete(lengths), expected)


def test_bipartite_needs_target_count():
    with pytest.raises(ValueError, match="needs tgt_lengths"):
        graphs.bipartite([3, 2])
    with pytest.raises(ValueError, match="2 sequences but tgt_lengths has 3"):
        graphs.bipartite([3, 2], [1, 1, 1])


def test_lengths_that_do_not_match_the_features():
    with pytest.raises(ValueError, match="add up to 5 tokens but nodes has 4 rows"):
        graphs.to_padded(torch.randn(4, 2), [3, 2])
    with pytest.raises(ValueError, match="2 sequences but padded holds 3"):
        graphs.to_nodes(torch.randn(3, 4, 2), [3, 2])
    with pytest.raises(ValueError, match="longest sequence has 5 tokens but padded holds only 4"):
        graphs.to_nodes(torch.randn(2, 4, 2), [5, 2])


def test_mask_to_edges_bool_and_key_padding():
    attn_mask = torch.tensor([[False, True], [False, False]])  # query 0 may not see key 1
    padding = torch.tensor([[False, False], [False, True]])  # sequence 1: key 1 is padding
    edge_index, bias = graphs.edges_from_mask(attn_mask, padding, batch_size=2, tgt_len=2, src_len=2)
    assert bias is None
    assert edge_index.tolist() == [[0, 0, 1, 2, 2], [0, 1, 1, 2, 3]]


def test_float_mask_biases_and_round_trip():
    mask = torch.tensor([[0.5, float("-inf"), -1.0], [float("-inf"), 0.0, 2.0]])
    edge_index, bias = graphs.edges_from_mask(mask, batch_size=1, tgt_len=2, src_len=3)
    assert edge_index.tolist() == [[0, 2, 1, 2], [0, 0, 1, 1]]
    assert bias[:, 0].tolist() == [0.5, -1.0, 0.0, 2.0]
    assert torch.equal(graphs.edges_to_mask(edge_index, 2, 3, bias)[0], mask)
    bool_mask = graphs.edges_to_mask(edge_index, 2, 3)
    assert torch.equal(bool_mask, torch.isinf(mask))


def test_per_head_mask_keeps_edges_any_head_allows():
    mask = torch.zeros(2, 1, 2)  # batch 1, 2 heads, L=1, S=2
    mask[0, 0, 1] = float("-inf")  # head 0 blocks key 1, head 1 allows it
    edge_index, bias = graphs.edges_from_mask(mask, batch_size=1, tgt_len=1, src_len=2, num_heads=2)
    assert edge_index.tolist() == [[0, 1], [0, 0]]
    assert bias.tolist() == [[0.0, 0.0], [float("-inf"), 0.0]]


def test_complete_graph_round_trips_through_masks():
    edge_index = graphs.causal([4])
    mask = graphs.edges_to_mask(edge_index, 4, 4)
    assert torch.equal(mask, torch.ones(4, 4, dtype=torch.bool).triu(1))
    back, _ = graphs.edges_from_mask(mask, batch_size=1, tgt_len=4, src_len=4)
    assert torch.equal(back, edge_index)


@pytest.mark.parametrize("kwargs, message", [
    (dict(attn_mask=torch.zeros(3, 3)), r"attn_mask has shape \(3, 3\) but should be"),
    (dict(attn_mask=torch.zeros(5, 2, 2)), r"\(batch_size \* num_heads, tgt_len, src_len\)"),
    (dict(attn_mask=torch.zeros(2, 2, dtype=torch.int32)), "bool or floating-point"),
    (dict(attn_mask=torch.full((2, 2), float("nan"))), "NaN"),
    (dict(key_padding_mask=torch.zeros(2, 3, dtype=torch.bool)), r"key_padding_mask has shape \(2, 3\)"),
])
def test_bad_masks(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        graphs.edges_from_mask(**kwargs, batch_size=2, tgt_len=2, src_len=2, num_heads=2)


def test_edges_to_mask_rejects_duplicates():
    with pytest.raises(ValueError, match="duplicate"):
        graphs.edges_to_mask(torch.tensor([[0, 0], [1, 1]]), 2, 2)


def pairs():
    return [(torch.tensor([3, 4, 5]), torch.tensor([1, 2])), (torch.tensor([7]), torch.tensor([8, 9, 1])),
            (torch.tensor([2, 2]), torch.tensor([6]))]


def test_seq2seq_data_single_pair():
    data = graphs.seq2seq_data(*pairs()[0], labels=torch.tensor([2, 0]))
    assert data["src"].position.tolist() == [0, 1, 2]
    assert torch.equal(data["src", "to", "src"].edge_index, graphs.complete([3]))
    assert torch.equal(data["tgt", "to", "tgt"].edge_index, graphs.causal([2]))
    assert torch.equal(data["src", "to", "tgt"].edge_index, graphs.bipartite([3], [2]))
    assert data["tgt"].y.tolist() == [2, 0]


def test_pyg_collates_seq2seq_batches():
    """Batch.from_data_list and DataLoader offset each edge type by its own node counts."""
    src_lengths, tgt_lengths = [3, 1, 2], [2, 3, 1]
    expected = {
        ("src", "to", "src"): graphs.complete(src_lengths),
        ("tgt", "to", "tgt"): graphs.causal(tgt_lengths),
        ("src", "to", "tgt"): graphs.bipartite(src_lengths, tgt_lengths),
    }
    data_list = [graphs.seq2seq_data(s, t) for s, t in pairs()]
    for batch in (Batch.from_data_list(data_list), next(iter(DataLoader(data_list, batch_size=3))),
                  graphs.seq2seq_batch(*zip(*pairs()))):
        for edge_type, edges in expected.items():
            assert torch.equal(batch[edge_type].edge_index, edges), edge_type
        assert batch["src"].position.tolist() == [0, 1, 2, 0, 0, 1]
        assert batch["tgt"].x.tolist() == [1, 2, 8, 9, 1, 6]
        assert batch["src"].batch.tolist() == [0, 0, 0, 1, 2, 2]


def test_sequence_data_collates():
    batch = Batch.from_data_list([graphs.sequence_data(torch.tensor([1, 2]), "causal"),
                                  graphs.sequence_data(torch.tensor([3, 4, 5]), "causal")])
    assert torch.equal(batch.edge_index, graphs.causal([2, 3]))
    assert batch.position.tolist() == [0, 1, 0, 1, 2]


def test_bad_batches():
    with pytest.raises(ValueError, match="empty batch"):
        graphs.seq2seq_batch([], [])
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        graphs.seq2seq_batch([torch.tensor([1]), torch.tensor([2])], [torch.tensor([1])])
    with pytest.raises(ValueError, match="labels has 1 entries but the target has 2 tokens"):
        graphs.seq2seq_data(torch.tensor([1]), torch.tensor([1, 2]), labels=torch.tensor([0]))
    with pytest.raises(TypeError, match="integer token ids"):
        graphs.sequence_data(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="'complete' or 'causal'"):
        graphs.sequence_data(torch.tensor([1, 2]), "bipartite")


def test_causal_window_keeps_the_last_tokens_only():
    edges = graphs.causal([4, 2], window=2)
    assert edges.tolist() == [[0, 0, 1, 1, 2, 2, 3, 4, 4, 5], [0, 1, 1, 2, 2, 3, 3, 4, 5, 5]]
    assert torch.equal(graphs.causal([5, 3], window=9), graphs.causal([5, 3]))
    source, target = graphs.causal([7], window=3)
    assert bool(((target - source >= 0) & (target - source < 3)).all()) and source.numel() == 1 + 2 + 5 * 3
    with pytest.raises(ValueError, match="window must be a positive integer"):
        graphs.causal([3], window=0)
    for bad in (True, 2.0, "2"):
        with pytest.raises(TypeError, match="window must be a positive integer"):
            graphs.causal([3], window=bad)
