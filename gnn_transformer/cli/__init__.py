"""The ``gnn-transformer`` command line: one module per subcommand, each adding its own parser.

A user error never prints a traceback.  Option values are checked when they are parsed
(:mod:`~gnn_transformer.cli.options`; argparse says which option and exits with status 2);
an error the library raises later for the user's input (``ValueError``, ``TypeError``,
``OSError``: a missing or unreadable file, a checkpoint of another model) becomes one line on
stderr and exit status 2 as well.  ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules; each defines ``add_parser(subparsers)`` which sets ``func``.
SUBCOMMANDS = ("check", "graph", "experiment", "train", "explain", "explore")

# Optional dependencies and the extra that installs each.
EXTRAS = {"matplotlib": "viz", "safetensors": "train", "transformers": "hf", "triton": "gpu"}

# What the library raises for bad input; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, OSError)


class CommandError(SystemExit):
    """A user error of a subcommand: exit status 2, the message already printed on stderr."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnn-transformer",
        description="The Transformer of 'Attention Is All You Need' as message passing on token graphs.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def _fail(message: str) -> CommandError:
    print(message, file=sys.stderr)
    return CommandError(message)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"gnn-transformer {args.command}"
    try:
        return int(args.func(args) or 0)
    except CommandError:
        raise
    except SystemExit as exit:  # a subcommand's own message for a user error
        if isinstance(exit.code, str) and not args.debug:
            raise _fail(exit.code) from None
        raise
    except ImportError as error:  # an optional extra is missing: say which, without a traceback
        if args.debug:
            raise
        missing = (getattr(error, "name", None) or "").split(".")[0]
        if missing in EXTRAS:
            raise _fail(f"{prefix} needs {missing}: pip install 'gnn-transformer[{EXTRAS[missing]}]'") from None
        raise _fail(f"{prefix}: {error}") from None
    except USER_ERRORS as error:
        if args.debug:
            raise
        raise _fail(f"{prefix}: {error} (--debug shows the traceback)") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
