"""``gnn-transformer graph PATTERN``: build an attention pattern, print its numbers, draw it.

The picture has two panels: the pattern as a matrix (query rows, key columns) and the
token graph drawn with networkx (an arrow from key to query).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..graphs.patterns.registry import OPTIONS, PATTERNS as REGISTRY, Pattern, build_pattern

__all__ = ["PATTERNS", "Pattern", "add_parser", "add_pattern_options", "pattern_arguments", "run", "draw"]

PATTERNS = tuple(REGISTRY)  # the names, in the registry's order


def pattern_arguments(args: argparse.Namespace) -> dict:
    """The pattern options of parsed ``args``, by their registry names (``{"n": 16, "radius": 2, ...}``)."""
    return {name: getattr(args, name) for name in OPTIONS}


def _build(args: argparse.Namespace) -> Pattern:
    """The pattern ``args.pattern`` with the options of ``args`` (see :func:`build_pattern`)."""
    return build_pattern(args.pattern, **pattern_arguments(args))


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
    """The options that size and shape a pattern, one per entry of the registry's ``OPTIONS`` (shared with
    ``gnn-transformer explore --pattern``)."""
    for option in OPTIONS.values():
        if option.type is bool:
            parser.add_argument(option.flag, action="store_true", help=option.help)
        else:
            parser.add_argument(option.flag, type=option.type, default=option.default, choices=option.choices,
                                help=option.help)


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
