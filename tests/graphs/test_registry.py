import functools

import pytest
import torch

from gnn_transformer import graphs
from gnn_transformer.cli import build_parser
from gnn_transformer.cli.graph import pattern_arguments
from gnn_transformer.graphs import patterns
from gnn_transformer.graphs.patterns import (OPTIONS, PATTERNS, SequenceGraph, as_sequence_graph, build_pattern,
                                             pattern_options, sequence_graph)

SEQUENCE_PATTERNS = [name for name, spec in PATTERNS.items() if spec.input == "lengths" and spec.node_lengths is None]


@pytest.mark.parametrize("name, options, expected", [
    ("window", dict(n=6, radius=1, causal=True), lambda: patterns.sliding_window([6], 1, causal=True)),
    ("bigbird", dict(n=7, batch=2, seed=3), lambda: patterns.bigbird([7, 7], 2, 1, 2, seed=3)),
    ("complete", dict(n=4, causal=True), lambda: graphs.causal([4])),
    ("convolution", dict(n=5), lambda: patterns.convolution([5], 3, 2, causal=False)),
    ("columns", dict(height=2, width=3, text_length=1), lambda: patterns.grid_columns([(2, 3)], 1)),
])
def test_a_registered_pattern_is_its_builder_called_with_its_options(name, options, expected):
    assert torch.equal(build_pattern(name, **options).edge_index, expected())
    lengths = [options.get("n", 16)] * options.get("batch", 1)
    if PATTERNS[name].input == "lengths":  # how it is called for given lengths
        assert torch.equal(PATTERNS[name].edges(lengths, **options), expected())


def test_what_a_drawing_needs():
    star = build_pattern("star", n=5)
    assert (star.num_nodes, star.layout, star.center) == (6, "circle", (5,))
    assert build_pattern("star", n=5, batch=2).center == ()
    rows = build_pattern("rows", height=2, width=3, text_length=2)
    assert (rows.num_nodes, rows.layout, rows.grid, rows.text_length) == (8, "grid", (2, 3), 2)
    assert build_pattern("rows", batch=2).layout == "line"


def test_the_command_line_options_are_the_registry():
    args = build_parser().parse_args(["graph", "bigbird", "--radius", "3", "--num-global", "2", "--causal",
                                      "--part", "local"])
    expected = pattern_options("bigbird", radius=3, num_global=2, causal=True, part="local")
    used = PATTERNS["bigbird"].used_options
    assert pattern_arguments(args) == {name: expected[name] for name in used}
    assert set(pattern_arguments(build_parser().parse_args(["explore", "--pattern", "window"]))) == {
        "n", "batch", "radius", "causal"}
    assert set(OPTIONS) > set(used)


def test_only_the_options_a_pattern_reads_are_checked():
    """`graph causal --height 0` is fine (causal has no image); `graph rows --height 0` is not."""
    assert pattern_options("causal", height=0, radius=-1)["height"] == 0
    with pytest.raises(ValueError, match="pattern option height must be an integer >= 1, got 0"):
        pattern_options("rows", height=0)
    with pytest.raises(TypeError, match="pattern option radius must be int, got True"):
        pattern_options("window", radius=True)
    with pytest.raises(FileNotFoundError, match="pattern option file: no file"):
        build_pattern("edgelist", file="/no/such/edge/list")


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="unknown pattern 'ring'; choose from complete, causal"):
        build_pattern("ring")
    with pytest.raises(TypeError, match=r"unknown pattern options \['radious'\]"):
        pattern_options("window", radious=2)
    with pytest.raises(TypeError, match="pattern option radius must be int, got '2'"):
        pattern_options("window", radius="2")
    with pytest.raises(TypeError, match="pattern option causal must be bool, got 1"):
        pattern_options("window", causal=1)
    with pytest.raises(ValueError, match="pattern option part must be one of"):
        pattern_options("strided", part="global")


@pytest.mark.parametrize("name", SEQUENCE_PATTERNS)
@pytest.mark.parametrize("causal", [False, True])
def test_a_sequence_graph_declares_causal_exactly_when_no_token_sees_a_later_one(name, causal):
    options = {"causal": causal} if "causal" in PATTERNS[name].options else {}
    graph = sequence_graph(name, **options)
    edges = graph([5, 3])
    assert torch.equal(edges, PATTERNS[name].edges([5, 3], **options))
    assert graph.causal is bool((edges[0] <= edges[1]).all())  # nodes of a sequence are numbered in order


def test_only_graphs_on_the_tokens_are_model_graphs():
    with pytest.raises(ValueError, match="'star' is not a graph on the tokens of sequences"):
        sequence_graph("star")
    with pytest.raises(ValueError, match="'rows' is not a graph on the tokens"):
        sequence_graph("rows")
    with pytest.raises(TypeError, match=r"pattern 'window' takes the options \['radius', 'causal'\], not \['stride'\]"):
        sequence_graph("window", stride=2)


def test_a_models_graph_from_a_builder_a_partial_a_name_or_a_function():
    assert repr(as_sequence_graph(graphs.complete)) == "complete" and not as_sequence_graph(graphs.complete).causal
    windowed = as_sequence_graph(functools.partial(graphs.causal, window=2))
    assert (repr(windowed), windowed.causal) == ("causal(window=2)", True)
    assert torch.equal(windowed([4, 2]), graphs.causal([4, 2], window=2))
    assert as_sequence_graph("causal").causal is True
    custom = as_sequence_graph(lambda lengths: graphs.complete(lengths))
    assert isinstance(custom, SequenceGraph) and custom.causal is None
    assert as_sequence_graph(None) is None
