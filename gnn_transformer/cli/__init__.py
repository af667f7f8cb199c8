"""The ``gnn-transformer`` command line: one module per subcommand, each adding its own parser."""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules; each defines ``add_parser(subparsers)`` which sets ``func``.
SUBCOMMANDS = ("check", "graph", "experiment", "train", "explain", "explore")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-transformer",
        description="The Transformer of 'Attention Is All You Need' as message passing on token graphs.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


# Optional dependencies and the extra that installs each.
EXTRAS = {"matplotlib": "viz", "safetensors": "train", "transformers": "hf", "triton": "gpu"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ImportError as error:  # an optional extra is missing: say which, without a traceback
        missing = (getattr(error, "name", None) or "").split(".")[0]
        if missing in EXTRAS:
            raise SystemExit(f"gnn-transformer {args.command} needs {missing}: "
                             f"pip install 'gnn-transformer[{EXTRAS[missing]}]'") from None
        raise SystemExit(f"gnn-transformer {args.command}: {error}") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
