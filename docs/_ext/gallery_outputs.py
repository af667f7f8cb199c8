"""A sphinx-gallery image scraper for examples that save their figures instead of showing them.

The examples write PNG files into the folder given as their first argument (``reset_argv`` in
``conf.py`` points it into the build) and close the figure, so matplotlib's scraper finds
nothing.  This scraper picks up every PNG written into that folder since the previous block and
places it under the block, as matplotlib's scraper would have.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sphinx_gallery.scrapers import figure_rst

_seen: dict[str, set[str]] = {}


def saved_figures(block, block_vars, gallery_conf):
    """Images written by the block just executed, as the rST that shows them."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if out is None or not out.is_dir():
        return ""
    seen = _seen.setdefault(str(out), set())
    new = sorted(p for p in out.glob("*.png") if p.name not in seen)
    names = []
    for png, target in zip(new, block_vars["image_path_iterator"]):
        seen.add(png.name)
        shutil.copyfile(png, target)
        names.append(target)
    return figure_rst(names, gallery_conf["src_dir"])


def setup(app):
    return {"parallel_read_safe": True}


OUTPUTS = Path(__file__).resolve().parents[1] / "_build" / "gallery-outputs"


def example_argv(gallery_conf, script_vars):
    """``sys.argv[1:]`` of an example: its own output folder in the build, not in the sources."""
    out = OUTPUTS / Path(script_vars["src_file"]).stem
    out.mkdir(parents=True, exist_ok=True)
    return [str(out)]
