"""Plain-text rendering of an explanation: stage headers, wrapped words, aligned tables.

Numbers are right-aligned with a fixed number of digits after the point; a table wider
than the line is cut into blocks of columns, each repeating the row labels.
"""
from __future__ import annotations

import math
import textwrap
from typing import Sequence

from .document import ELLIPSIS, Stage, Table

__all__ = ["format_cell", "render_table", "render_stage", "render_text", "LINE_WIDTH"]

LINE_WIDTH = 108
_INDENT = "  "


def format_cell(cell, digits: int) -> str:
    """A float with ``digits`` digits after the point; anything else as ``str``."""
    if isinstance(cell, float):
        return f"{cell:.{digits}f}"
    return str(cell)


def _column_blocks(widths: list[int], keys: int, limit: int) -> list[list[int]]:
    """Split the non-key columns into consecutive blocks that fit ``limit`` with the key columns,
    as few as possible and of about equal size."""
    key_width = sum(widths[:keys]) + 2 * keys

    def fits(block: list[int]) -> bool:
        return key_width + sum(widths[c] + 2 for c in block) <= limit or len(block) == 1

    columns = list(range(keys, len(widths)))
    for count in range(1, max(1, len(columns)) + 1):
        size = math.ceil(len(columns) / count) if columns else 0
        blocks = [columns[start:start + size] for start in range(0, len(columns), size)] if columns else [[]]
        if all(fits(block) for block in blocks):
            return blocks
    return [[column] for column in columns]


def render_table(table: Table, digits: int, width: int = LINE_WIDTH) -> str:
    """The table as aligned columns under its title (text left-aligned, numbers right-aligned)."""
    cells = [[format_cell(cell, digits) for cell in row] for row in table.rows]
    widths = [max([len(name)] + [len(row[c]) for row in cells]) for c, name in enumerate(table.columns)]
    numeric = [bool(table.rows) and all(isinstance(row[c], (int, float)) for row in table.rows)
               for c in range(len(table.columns))]

    def line(values: Sequence[str], columns: list[int]) -> str:
        parts = [values[c].rjust(widths[c]) if numeric[c] else values[c].ljust(widths[c]) for c in columns]
        return (_INDENT + "  ".join(parts)).rstrip()

    blocks = _column_blocks(widths, table.keys, width - len(_INDENT))
    out = []
    for number, block in enumerate(blocks):
        columns = list(range(table.keys)) + block
        title = table.title
        if len(blocks) > 1:
            names = [table.columns[c] for c in block if table.columns[c] != ELLIPSIS]
            title += f"  [columns {names[0]}..{names[-1]}, part {number + 1} of {len(blocks)}]"
        out += [_INDENT + title, line(table.columns, columns)]
        out += [line(row, columns) for row in cells]
        out.append("")
    if table.note:
        out.insert(-1, _INDENT + f"({table.note})")
    return "\n".join(out)


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent) or [""]


def render_stage(number: int, stage: Stage, digits: int, width: int = LINE_WIDTH) -> str:
    """One stage: a numbered header, the formula, the words, the shapes and the tables."""
    header = f"== {number}. {stage.title} "
    out = [header + "=" * max(3, width - len(header)), ""]
    out += [_INDENT + line for line in stage.formula.splitlines()]
    out.append("")
    out += _wrap(stage.text, width, _INDENT)
    if stage.shapes:
        out += _wrap("Shapes: " + "; ".join(stage.shapes), width, _INDENT)
    out.append("")
    out += [render_table(table, digits, width) for table in stage.tables]
    return "\n".join(out)


def render_text(stages: Sequence[Stage], digits: int, heading: str = "", width: int = LINE_WIDTH) -> str:
    """Every stage in order, under an optional heading."""
    parts = [heading + "\n"] if heading else []
    parts += [render_stage(number, stage, digits, width) for number, stage in enumerate(stages, 1)]
    return "\n".join(parts).rstrip() + "\n"
