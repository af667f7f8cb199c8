"""One self-contained HTML page of an explanation: inline CSS, no script, no external resource.

Every text is escaped; numbers are formatted as in the terminal (:func:`.render_text.format_cell`),
so the page and the printout show the same values.
"""
from __future__ import annotations

from html import escape
from typing import Sequence

from .document import Stage, Table
from .render_text import format_cell

__all__ = ["render_html", "render_fragment"]

_CSS = """
.gt-explain { font-family: system-ui, sans-serif; color: #1b1b1b; max-width: 72rem; margin: 1rem auto; }
.gt-explain h1 { font-size: 1.4rem; }
.gt-explain section { border-top: 1px solid #ccc; padding: 0.4rem 0 0.8rem; }
.gt-explain h2 { font-size: 1.1rem; margin: 0.5rem 0; }
.gt-explain pre.formula { background: #f4f4f8; padding: 0.4rem 0.6rem; white-space: pre-wrap; }
.gt-explain p.shapes { color: #444; font-size: 0.9rem; }
.gt-explain table { border-collapse: collapse; margin: 0.3rem 0 0.8rem; font-size: 0.85rem; }
.gt-explain caption { text-align: left; font-weight: 600; padding: 0.2rem 0; }
.gt-explain th, .gt-explain td { border: 1px solid #ddd; padding: 0.1rem 0.4rem; }
.gt-explain th { background: #eef; }
.gt-explain td.num { text-align: right; font-family: ui-monospace, monospace; }
.gt-explain p.note { font-size: 0.8rem; color: #555; margin-top: -0.6rem; }
"""


def _table(table: Table, digits: int) -> str:
    head = "".join(f"<th>{escape(name)}</th>" for name in table.columns)
    rows = []
    for row in table.rows:
        cells = []
        for cell in row:
            css = ' class="num"' if isinstance(cell, (int, float)) else ""
            cells.append(f"<td{css}>{escape(format_cell(cell, digits))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    return (f"<table><caption>{escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{note}")


def _stage(number: int, stage: Stage, digits: int) -> str:
    shapes = f'<p class="shapes">Shapes: {escape("; ".join(stage.shapes))}</p>' if stage.shapes else ""
    tables = "\n".join(_table(table, digits) for table in stage.tables)
    return (f'<section id="{escape(stage.key)}"><h2>{number}. {escape(stage.title)}</h2>'
            f'<pre class="formula">{escape(stage.formula)}</pre><p>{escape(stage.text)}</p>{shapes}\n{tables}</section>')


def render_fragment(stages: Sequence[Stage], digits: int, heading: str = "") -> str:
    """The explanation as one ``<div>`` with its own ``<style>`` (for Jupyter's ``_repr_html_``)."""
    title = f"<h1>{escape(heading)}</h1>" if heading else ""
    body = "\n".join(_stage(number, stage, digits) for number, stage in enumerate(stages, 1))
    return f'<div class="gt-explain"><style>{_CSS}</style>{title}\n{body}</div>'


def render_html(stages: Sequence[Stage], digits: int, heading: str = "") -> str:
    """A complete HTML document of the explanation."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(heading or 'gnn-transformer explain')}</title></head>\n<body>\n"
            f"{render_fragment(stages, digits, heading)}\n</body></html>\n")
