import math

import pytest

from gnn_transformer import graphs, patterns
from gnn_transformer.analysis import LayerSpec, complexity_table, format_complexity_table, table_1_layers
from gnn_transformer.analysis.complexity import growth_exponent, sequential_operations

LENGTHS = (8, 16, 32, 64)


@pytest.fixture(scope="module")
def rows():
    return complexity_table(LENGTHS, d_model=16, radius=4, kernel_size=3)


def pick(rows, layer, n):
    return next(row for row in rows if row.layer == layer and row.n == n)


def test_table_1_rows_are_counted_on_the_graphs(rows):
    d = 16
    for n in LENGTHS:
        attention = pick(rows, "Self-Attention", n)
        assert (attention.edges, attention.sequential, attention.max_path_length) == (n * n, 1, 1)
        assert attention.operations == n * n * d + n * d * d
        recurrent = pick(rows, "Recurrent", n)
        assert (recurrent.edges, recurrent.sequential, recurrent.max_path_length) == (2 * n - 1, n, n - 1)
        assert recurrent.operations == (2 * n - 1) * d * d
        restricted = pick(rows, "Self-Attention (restricted)", n)
        assert restricted.edges == patterns.sliding_window([n], 4).size(1)
        assert restricted.max_path_length == math.ceil((n - 1) / 4) and restricted.sequential == 1
        convolution = pick(rows, "Convolutional", n)
        assert convolution.max_path_length == math.ceil((n - 1) / 2) and convolution.sequential == 1
        dilated = pick(rows, "Convolutional (dilated)", n)
        assert dilated.max_path_length == math.ceil(math.log(n, 3) - 1e-9)
        assert pick(rows, "Sparse Transformer", n).max_path_length == 2
        assert pick(rows, "Star-Transformer", n).max_path_length == 2


def test_growth_exponents_show_the_big_o(rows):
    group = lambda layer: [row for row in rows if row.layer == layer]  # noqa: E731
    assert growth_exponent(group("Self-Attention"), "edges") == pytest.approx(2.0)
    assert growth_exponent(group("Self-Attention"), "max_path_length") == pytest.approx(0.0)
    assert growth_exponent(group("Recurrent"), "max_path_length") == pytest.approx(1.0, abs=0.1)
    assert growth_exponent(group("Self-Attention (restricted)"), "max_path_length") == pytest.approx(1.0, abs=0.1)
    assert growth_exponent(group("Convolutional (dilated)"), "max_path_length") < 0.5


def test_format_lists_every_layer_and_length(rows):
    text = format_complexity_table(rows, 16)
    for layer in ("Self-Attention", "Recurrent", "Convolutional (dilated)", "O(n/r)", "O(log_k n)"):
        assert layer in text
    assert "n=64" in text and "d = 16" in text
    assert "sent/layer P=4" in text and "O(r d) per boundary" in text and "O(n d)" in text


def test_communication_column_grows_as_the_cut():
    """Complete graph: every device's rows to every other, O(n d); window: 2r rows per boundary, O(r d)."""
    rows = complexity_table([16, 64], d_model=8, devices=2, layers=table_1_layers(radius=3, extra=False))
    for n in (16, 64):
        assert pick(rows, "Self-Attention", n).communication == n * 2 * 8
        assert pick(rows, "Self-Attention (restricted)", n).communication == 2 * 3 * 2 * 8
        assert pick(rows, "Recurrent", n).communication == 8  # one hidden state crosses the boundary
    with pytest.raises(ValueError, match="devices must be a positive integer, got 0"):
        complexity_table([16], devices=0)


def test_custom_rows_and_recurrence_checks():
    spec = LayerSpec("Causal attention", "causal", lambda n: graphs.causal([n]), "attention")
    (row,) = complexity_table([10], 8, layers=[spec])
    assert (row.edges, row.max_path_length, row.operations) == (55, 1, 55 * 8 + 10 * 64)
    with pytest.raises(ValueError, match="acyclic"):
        sequential_operations(graphs.complete([3]), 3, recurrent=True)
