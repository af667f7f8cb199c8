"""The explorer page: one self-contained HTML file (CSS, JavaScript and data inline; opens offline).

The page's files ship with the package (``template.html``, ``explorer.css``, ``explorer.js``,
read with :mod:`importlib.resources`).  The script is plain JavaScript drawing SVG, with no
library and no framework, so nothing needs bundling and the page fetches nothing.  The data
(:mod:`gnn_transformer.explorer.data`) goes into a ``<script type="application/json">``
element, with ``<``, ``>`` and ``&`` written as JSON escapes so no token label can end it.
"""
from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path

__all__ = ["render_page", "iframe", "save_page"]

_PLACEHOLDER = re.compile(r"\{\{(TITLE|CSS|JS|DATA)\}\}")


def _asset(name: str) -> str:
    return resources.files("gnn_transformer.explorer").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(data: dict) -> str:
    text = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict) -> str:
    """The page for ``data`` (a dict from :func:`gnn_transformer.explorer.data.run_data`)."""
    parts = {"TITLE": html.escape(data["title"]), "CSS": _asset("explorer.css"), "JS": _asset("explorer.js"),
             "DATA": _json_for_script(data)}
    return _PLACEHOLDER.sub(lambda match: parts[match.group(1)], _asset("template.html"))  # one pass


def iframe(page: str, height: int = 720) -> str:
    """``page`` inside an ``<iframe srcdoc=...>`` (for Jupyter): its script runs isolated from the notebook."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
            f'style="width: 100%; height: {int(height)}px; border: 1px solid #e5e7eb; border-radius: 8px;">'
            f"</iframe>")


def save_page(page: str, path: str | Path) -> Path:
    """Write ``page`` to ``path`` (an ``.html`` file; its folder is created if missing)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the page's file name, e.g. {path / 'explorer.html'}")
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the explorer writes an HTML page: the file name must end in .html, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
