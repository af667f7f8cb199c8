"""``gnn-transformer graph PATTERN``: build an attention pattern, print its numbers, draw it.

The picture has two panels: the pattern as a matrix (query rows, key columns) and the
token graph drawn with networkx (an arrow from key to query).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..graphs.patterns.registry import OPTIONS, PATTERNS as REGISTRY, Option, Pattern, build_pattern
from .options import existing_file, non_negative_int, output_file, positive_int

__all__ = ["PATTERNS", "Pattern", "add_parser", "add_pattern_options", "pattern_arguments", "picture_file", "run",
           "draw"]

PATTERNS = tuple(REGISTRY)  # the names, in the registry's order


def _option_type(option: Option):
    """The command line's check of a pattern option (:mod:`~gnn_transformer.cli.options`), by its registry entry."""
    if option.name == "file":
        return existing_file
    if option.type is int:
        return positive_int if option.minimum == 1 else non_negative_int
    return str


def pattern_arguments(args: argparse.Namespace, pattern: str | None = None) -> dict:
    """The options pattern ``pattern`` (default ``args.pattern``) reads, checked, by their registry names.

    Only the options the pattern uses are checked (``graph causal`` does not look at ``--height``);
    the values of the others are left out, so the registry's defaults stand.  A bad value exits
    with one line naming the option, as argparse does (status 2 through the command line's ``main``).
    """
    name = pattern or args.pattern
    values = {}
    for key in REGISTRY[name].used_options:
        option, text = OPTIONS[key], getattr(args, key)
        if text is None or option.type is bool:
            values[key] = option.default if text is None else text
            continue
        try:
            value = _option_type(option)(text)
            values[key] = option.check(value) if option.choices else value
        except (argparse.ArgumentTypeError, ValueError) as error:
            command = getattr(args, "command", "graph")
            raise SystemExit(f"gnn-transformer {command} {name}: argument {option.flag}: {error}") from None
    return values


def _build(args: argparse.Namespace) -> Pattern:
    """The pattern ``args.pattern`` with the options of ``args`` (see :func:`build_pattern`)."""
    return build_pattern(args.pattern, **pattern_arguments(args))


def picture_file(text: str) -> Path:
    """``--out`` of ``graph``: a writable file path ending in .png or .svg."""
    path = Path(output_file(text))
    if path.suffix.lower() not in (".png", ".svg"):
        raise argparse.ArgumentTypeError(f"the picture must end in .png or .svg, got {path.name!r}")
    return path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "graph", help="build an attention pattern, print its size and path length, draw it",
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("pattern", choices=PATTERNS, metavar="PATTERN", help=f"one of {', '.join(PATTERNS)}")
    add_pattern_options(parser)
    parser.add_argument("--layout", choices=("line", "circle", "spring", "grid"), help="node layout of the drawing")
    parser.add_argument("--out", type=picture_file, help="write the picture here (.png or .svg)")
    parser.set_defaults(func=run)


def add_pattern_options(parser: argparse.ArgumentParser) -> None:
    """The options that size and shape a pattern, one per entry of the registry's ``OPTIONS`` (shared with
    ``gnn-transformer explore --pattern``).

    They are read as text and checked by :func:`pattern_arguments` once the pattern is known, so
    that an option the pattern does not use is neither required nor checked.
    """
    for option in OPTIONS.values():
        if option.type is bool:
            parser.add_argument(option.flag, action="store_true", help=option.help)
        else:
            choices = f"; one of {', '.join(option.choices)}" if option.choices else ""
            parser.add_argument(option.flag, metavar=option.name.upper(),
                                help=f"{option.help} (default: {option.default}{choices})")


def run(args: argparse.Namespace) -> int:
    from ..analysis import max_path_length

    try:
        pattern = _build(args)  # a bad option value exits first, with one line naming the option
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
