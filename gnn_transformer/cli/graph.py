"""``gnn-transformer graph PATTERN``: build an attention pattern, print its numbers, draw it.

The picture has two panels: the pattern as a matrix (query rows, key columns) and the
token graph drawn with networkx (an arrow from key to query).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor


@dataclass
class Pattern:
    edge_index: Tensor
    num_nodes: int
    layout: str = "line"
    grid: tuple[int, int] | None = None
    text_length: int = 0
    center: tuple[int, ...] = ()


def _build(args: argparse.Namespace) -> Pattern:
    from .. import graphs
    from ..graphs import patterns

    lengths = [args.n] * args.batch
    causal = args.causal
    grid = (args.height, args.width)
    grid_lengths = patterns.grid_lengths([grid] * args.batch, args.text_length)
    image = dict(num_nodes=int(grid_lengths.sum()), layout="grid" if args.batch == 1 else "line", grid=grid,
                 text_length=args.text_length)
    builders = {
        "complete": lambda: Pattern(graphs.causal(lengths) if causal else graphs.complete(lengths), sum(lengths)),
        "causal": lambda: Pattern(graphs.causal(lengths), sum(lengths)),
        "window": lambda: Pattern(patterns.sliding_window(lengths, args.radius, causal), sum(lengths)),
        "dilated": lambda: Pattern(patterns.dilated_window(lengths, args.radius, args.dilation, causal), sum(lengths)),
        "global": lambda: Pattern(patterns.global_tokens(lengths, args.num_global, args.radius, causal),
                                  sum(lengths)),
        "bigbird": lambda: Pattern(patterns.bigbird(lengths, args.radius, args.num_global, args.num_random,
                                                    args.seed, causal), sum(lengths)),
        "block": lambda: Pattern(patterns.block_local(lengths, args.block_size, causal), sum(lengths)),
        "strided": lambda: Pattern(patterns.strided(lengths, args.stride, args.part, causal), sum(lengths)),
        "star": lambda: Pattern(patterns.star(lengths, causal), sum(lengths) + args.batch, layout="circle",
                                center=(args.n,) if args.batch == 1 else ()),
        "chain": lambda: Pattern(patterns.chain(lengths), sum(lengths)),
        "convolution": lambda: Pattern(patterns.convolution(lengths, args.kernel_size, args.dilation,
                                                            causal=causal), sum(lengths)),
        "rows": lambda: Pattern(patterns.grid_rows([grid] * args.batch, args.text_length, causal), **image),
        "columns": lambda: Pattern(patterns.grid_columns([grid] * args.batch, args.text_length, causal), **image),
        "grid-window": lambda: Pattern(patterns.grid_window([grid] * args.batch, args.kernel_size,
                                                            args.text_length, causal), **image),
        "edgelist": lambda: _edge_list(args),
    }
    return builders[args.pattern]()


PATTERNS = ("complete", "causal", "window", "dilated", "global", "bigbird", "block", "strided", "star", "chain",
            "convolution", "rows", "columns", "grid-window", "edgelist")


def _edge_list(args: argparse.Namespace) -> Pattern:
    import networkx as nx

    from ..graphs import patterns

    if args.file is None:
        raise ValueError("the edgelist pattern reads its graph from a file: give --file PATH (lines 'u v')")
    graph = nx.read_edgelist(args.file, nodetype=int, create_using=nx.DiGraph if args.directed else nx.Graph)
    # node k is the k-th node met in the file
    return Pattern(patterns.from_networkx(graph, add_self_loops=True), graph.number_of_nodes(), layout="spring")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "graph", help="build an attention pattern, print its size and path length, draw it",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("pattern", choices=PATTERNS, metavar="PATTERN", help=f"one of {', '.join(PATTERNS)}")
    add_pattern_options(parser)
    parser.add_argument("--layout", choices=("line", "circle", "spring", "grid"), help="node layout of the drawing")
    parser.add_argument("--out", type=Path, help="write the picture here (.png or .svg)")
    parser.set_defaults(func=run)


def add_pattern_options(parser: argparse.ArgumentParser) -> None:
    """The options that size and shape a pattern (shared with ``gnn-transformer explore --pattern``)."""
    parser.add_argument("--n", type=int, default=16, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=1, help="sequences (a disjoint union)")
    parser.add_argument("--causal", action="store_true", help="keep only keys at or before their query")
    parser.add_argument("--radius", type=int, default=2, help="window radius (window, dilated, global, bigbird)")
    parser.add_argument("--dilation", type=int, default=2, help="gap between keys (dilated, convolution)")
    parser.add_argument("--num-global", type=int, default=1, help="global tokens (global, bigbird)")
    parser.add_argument("--num-random", type=int, default=2, help="random keys per query (bigbird)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random keys (bigbird)")
    parser.add_argument("--block-size", type=int, default=4, help="tokens per block (block)")
    parser.add_argument("--stride", type=int, default=4, help="stride (strided)")
    parser.add_argument("--part", choices=("both", "local", "strided"), default="both", help="strided part")
    parser.add_argument("--kernel-size", type=int, default=3, help="kernel (convolution, grid-window)")
    parser.add_argument("--height", type=int, default=4, help="image rows (rows, columns, grid-window)")
    parser.add_argument("--width", type=int, default=4, help="image columns (rows, columns, grid-window)")
    parser.add_argument("--text-length", type=int, default=0, help="text tokens before the image")
    parser.add_argument("--file", help="edge list 'u v' per line (edgelist)")
    parser.add_argument("--directed", action="store_true", help="read the edge list as directed (edgelist)")


def run(args: argparse.Namespace) -> int:
    from ..analysis import max_path_length

    if args.out is not None and args.out.suffix.lower() not in (".png", ".svg"):
        raise SystemExit(f"gnn-transformer graph: --out must end in .png or .svg, got {args.out.name!r}")
    try:
        pattern = _build(args)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"gnn-transformer graph {args.pattern}: {error}") from error
    edges = pattern.edge_index.size(1)
    path = max_path_length(pattern.edge_index, pattern.num_nodes)
    print(f"pattern {args.pattern}: {pattern.num_nodes} nodes, {edges} edges "
          f"({edges / max(pattern.num_nodes, 1):.2f} per query), maximum path length {path} layers")
    if args.out is not None:
        print(f"wrote {draw(pattern, args.pattern, args.layout, args.out)}")
    return 0


def draw(pattern: Pattern, name: str, layout: str | None, out: Path) -> Path:
    """Matrix and graph side by side, saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..analysis import viz

    layout = layout or pattern.layout
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.6]})
    viz.plot_adjacency(pattern.edge_index, pattern.num_nodes, ax=left,
                       title=f"{name}: {pattern.edge_index.size(1)} edges")
    viz.draw_token_graph(pattern.edge_index, pattern.num_nodes, layout=layout, grid=pattern.grid,
                         text_length=pattern.text_length, center=pattern.center, ax=right, title="key -> query")
    figure.tight_layout()
    return viz.save(figure, out)
