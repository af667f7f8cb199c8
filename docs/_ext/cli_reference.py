"""``.. cli-help:: [SUBCOMMAND ...]``: the help text of a ``gnn-transformer`` parser, as printed.

The text comes from :func:`gnn_transformer.cli.build_parser` at build time, so the reference
cannot drift from the parsers.
"""
from __future__ import annotations

import argparse
import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def parser_help(path: list[str]) -> str:
    """The ``--help`` text of ``gnn-transformer PATH...`` (100 columns)."""
    from gnn_transformer.cli import build_parser

    os.environ["COLUMNS"] = "100"
    parser = build_parser()
    for name in path:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or name not in actions[0].choices:
            raise ValueError(f"cli-help: no subcommand {name!r} under {parser.prog!r}")
        parser = actions[0].choices[name]
    return parser.format_help()


def subcommands(path: list[str]) -> list[str]:
    """The subcommands of ``gnn-transformer PATH...`` (empty for a leaf)."""
    from gnn_transformer.cli import build_parser

    parser = build_parser()
    for name in path:
        parser = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0].choices[name]
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(actions[0].choices) if actions else []


class CliHelp(SphinxDirective):
    optional_arguments = 10
    has_content = False

    def run(self):
        text = parser_help(list(self.arguments))
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


class CliReference(SphinxDirective):
    """Every command of the parser tree, each a section with its help text."""

    has_content = False

    def run(self):
        from docutils.statemachine import StringList
        from sphinx.util.nodes import nested_parse_with_titles

        lines: list[str] = []

        def visit(path: list[str]) -> None:
            title = " ".join(["gnn-transformer", *path])
            lines.extend([title, "-" * len(title), "", ".. cli-help:: " + " ".join(path), ""])
            for name in subcommands(path):
                visit([*path, name])

        visit([])
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="cli-reference"), container)
        return container.children


def setup(app):
    app.add_directive("cli-help", CliHelp)
    app.add_directive("cli-reference", CliReference)
    return {"parallel_read_safe": True}
