import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from gnn_transformer import graphs, viz  # noqa: E402


def test_attention_matrix_places_each_edge():
    edge_index = graphs.causal([3])
    weights = torch.arange(1.0, 7.0)
    dense = viz.attention_matrix(edge_index, weights, 3, 3)
    assert dense.tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]
    per_head = viz.attention_matrix(edge_index, torch.stack([weights, -weights], 1), 3, 3)
    assert per_head.shape == (2, 3, 3) and torch.equal(per_head[1], -dense)


def test_pictures_are_written(tmp_path):
    matrix = viz.attention_matrix(graphs.bipartite([4], [3]), torch.rand(12), 3, 4)
    heatmap = viz.save(viz.plot_attention_heatmap(matrix, list("abcd"), list("xyz"), title="cross"), tmp_path / "h.png")
    graph = viz.save(viz.draw_bipartite_attention(matrix, list("abcd"), list("xyz")), tmp_path / "g.svg")
    assert heatmap.stat().st_size > 1000 and graph.read_text().startswith("<?xml")
    with pytest.raises(ValueError, match=".png or .svg"):
        viz.save(viz.plot_attention_heatmap(matrix), tmp_path / "h.jpg")
