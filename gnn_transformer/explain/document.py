"""What an explanation holds: stages of a forward pass, each with its formula, words and tables.

Tables keep raw numbers (Python floats); the renderers (:mod:`.render_text`,
:mod:`.render_html`) format them with the explanation's number of digits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["Table", "Stage", "ELLIPSIS", "node_table", "feature_columns", "vector_cells", "truncation_note",
           "row_statistics"]

ELLIPSIS = "…"


@dataclass
class Table:
    """A table of one stage.

    Attributes:
        title: what the table shows (one line).
        columns: column headers.
        rows: one list of cells per row; a cell is a ``str``, an ``int`` or a ``float``.
        keys: how many leading columns label a row (repeated when a wide table is wrapped).
        note: an optional remark printed under the table (e.g. which features were left out).
    """

    title: str
    columns: list[str]
    rows: list[list]
    keys: int = 2
    note: str = ""

    def column(self, name: str) -> list:
        """The cells of one column, by header."""
        if name not in self.columns:
            raise KeyError(f"table {self.title!r} has no column {name!r}; columns: {self.columns}")
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


@dataclass
class Stage:
    """One step of the forward pass, in the order the model computes it.

    Attributes:
        key: a stable identifier, e.g. ``"encoder.0.self_attention"``.
        title: a heading for people.
        formula: the paper's formula in plain text (unicode).
        text: what the stage computes and why, in a few sentences.
        shapes: lines such as ``"q: (T, H, C) = (3, 2, 4)"``.
        tables: the numbers.
    """

    key: str
    title: str
    formula: str
    text: str
    shapes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)

    def table(self, title_start: str) -> Table:
        """The first table whose title starts with ``title_start``."""
        for table in self.tables:
            if table.title.startswith(title_start):
                return table
        raise KeyError(f"stage {self.key!r} has no table starting with {title_start!r}; "
                       f"tables: {[t.title for t in self.tables]}")


def feature_columns(prefix: str, width: int, max_features: int) -> list[str]:
    """``['q0', 'q1', ...]``, cut to ``max_features`` names and an ellipsis column if longer."""
    shown = min(width, max_features)
    names = [f"{prefix}{index}" for index in range(shown)]
    return names + [ELLIPSIS] if shown < width else names


def vector_cells(vector: Tensor, max_features: int) -> list:
    """The cells of one vector (F,): floats, cut like :func:`feature_columns`."""
    values = [float(v) for v in vector[:max_features]]
    return values + [ELLIPSIS] if vector.numel() > max_features else values


def truncation_note(widths: Sequence[int], max_features: int) -> str:
    """A note saying that vectors longer than ``max_features`` show only their first features."""
    longest = max(widths)
    if longest <= max_features:
        return ""
    return (f"vectors of more than {max_features} features show the first {max_features} "
            f"({ELLIPSIS} marks the rest; the longest here has {longest})")


def node_table(title: str, labels: Sequence[str], blocks: Sequence[tuple[str, Tensor]], max_features: int,
               extra: Sequence[tuple[str, Tensor]] = ()) -> Table:
    """One row per node: its index ``i``, its token, then each block's features side by side.

    Args:
        labels: the token of each node (N).
        blocks: (column prefix, values (N, F)) pairs, e.g. ``[("q", q), ("k", k)]``.
        extra: (column name, values (N,)) single columns after the blocks (e.g. a mean).
    """
    columns = ["i", "token"]
    for prefix, values in blocks:
        columns += feature_columns(prefix, values.size(-1), max_features)
    columns += [name for name, _ in extra]
    rows = []
    for node, label in enumerate(labels):
        row = [node, label]
        for _, values in blocks:
            row += vector_cells(values[node], max_features)
        row += [values[node].item() for _, values in extra]  # ints stay ints
        rows.append(row)
    note = truncation_note([values.size(-1) for _, values in blocks], max_features)
    return Table(title, columns, rows, note=note)


def row_statistics(values: Tensor) -> list[tuple[str, Tensor]]:
    """The ``mean`` and (population) ``std`` of each row (N, F), as extra columns for :func:`node_table`."""
    values = values.to(torch.float64)
    return [("mean", values.mean(-1)), ("std", values.std(-1, unbiased=False))]
