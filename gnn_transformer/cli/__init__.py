"""The ``gnn-transformer`` command line: one module per subcommand, each adding its own parser."""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules; each defines ``add_parser(subparsers)`` which sets ``func``.
SUBCOMMANDS = ("check", "graph", "experiment", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-transformer",
        description="The Transformer of 'Attention Is All You Need' as message passing on token graphs.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
