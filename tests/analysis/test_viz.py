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


def test_token_graphs_and_attention_are_drawn(tmp_path):
    from gnn_transformer import patterns

    edge_index = patterns.sliding_window([6], 1)
    weights = torch.rand(edge_index.size(1), 3)
    plain = viz.save(viz.draw_token_graph(edge_index, 6, title="window"), tmp_path / "graph.png")
    drawn = viz.draw_token_graph(edge_index, 6, weights, labels=list("abcdef"), head=2, min_weight=0.5)
    kept = [p for p in drawn.patches]  # one arrow per kept edge, self-loops hidden
    off_diagonal = edge_index[0] != edge_index[1]
    assert len(kept) == int((weights[off_diagonal, 2] >= 0.5 * weights[off_diagonal, 2].max()).sum())
    viz.save(drawn, tmp_path / "attention.svg")
    grid = viz.draw_token_graph(patterns.grid_rows((2, 2), 1), 5, layout="grid", grid=(2, 2), text_length=1)
    heads = viz.plot_attention_heads(edge_index, weights, 6, columns=2, title="per head")
    assert len([ax for ax in heads.axes if ax.images]) == 3
    viz.save(heads, tmp_path / "heads.png")
    matrix = viz.plot_adjacency(edge_index, 6)
    assert matrix.images[0].get_array().sum() == edge_index.size(1)
    for path in (plain, tmp_path / "attention.svg", tmp_path / "heads.png"):
        assert path.stat().st_size > 1000
    viz.save(grid, tmp_path / "grid.png")
    with pytest.raises(ValueError, match="layout must be"):
        viz.draw_token_graph(edge_index, 6, layout="hexagonal")
    with pytest.raises(ValueError, match="needs grid"):
        viz.draw_token_graph(edge_index, 6, layout="grid")


def test_experiment_plots(tmp_path):
    from gnn_transformer import analysis

    rows = analysis.complexity_table([8, 16], 8, layers=analysis.table_1_layers(extra=False))
    figure = analysis.plot_complexity(rows)
    assert [len(ax.lines) for ax in figure.axes[:3]] == [5, 5, 5]
    viz.save(figure, tmp_path / "complexity.png")
    result = analysis.rank_collapse(architectures=["attention"], depth=2, lengths=[6, 6], d_model=8, nhead=2)
    figure = analysis.plot_rank_collapse(result)
    assert len(figure.axes[0].lines) == 4
    assert viz.save(figure, tmp_path / "collapse.png").stat().st_size > 1000
