"""Sphinx configuration of the gnn-transformer documentation.

Build (from the repository root, with the ``docs`` extra installed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API pages are generated from ``__all__`` of every public package (``_ext/api_pages.py``),
the tutorials are ``examples/`` executed by sphinx-gallery, the CLI reference is the argument
parsers' help (``_ext/cli_reference.py``).  MathJax is served from the build (the ``mathjax``
package of the ``docs`` extra), so the site works offline.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

import gnn_transformer  # noqa: E402

project = "gnn-transformer"
author = "The gnn-transformer authors"
copyright = "The gnn-transformer authors, MIT licence"
release = version = gnn_transformer.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "api_pages",
    "cli_reference",
    "docstrings",
    "gallery_outputs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "tutorials/*.ipynb", "tutorials/*.py",
                    "tutorials/*.zip", "tutorials/*.json"]
root_doc = "index"
nitpicky = True

# ---- MyST ----
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# ---- autodoc / napoleon ----
# The fused backend's kernels import Triton (the gpu extra, Linux x86-64 only).  Without it,
# their modules are imported with Triton mocked: their pages come from the docstrings and the
# source all the same (api_pages mocks it too while it lists the modules).
autodoc_mock_imports = [] if importlib.util.find_spec("triton") is not None else ["triton"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": False}
# Methods that override PyG or torch without a docstring of their own stay undocumented,
# rather than showing the base class's text, written for another library's cross-references.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Shapes", "Shape", ("Returns (dense call)", "returns_style")]
napoleon_use_rtype = False

# Names outside this library: their documentation lives on other sites (no network at build
# time, so no intersphinx inventories); references to them are plain text, not broken links.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|torch_geometric|networkx|nx|matplotlib|numpy|np|transformers|triton|argparse"
               r"|collections|typing|pathlib|os|enum|abc|dataclasses|types|io|json|contextlib"
               r"|collections\.abc|safetensors|playwright|importlib)(\..*)?"),
    (r"py:.*", r"(Tensor|Module|Parameter|Data|HeteroData|Batch|Figure|Axes|DiGraph|Graph|Path|PathLike"
               r"|Callable|Iterable|Iterator|Sequence|Mapping|Any|Optional|Union|Literal|Self|TypeAlias"
               r"|Generator|dtype|device|ndarray|MessagePassing|Enum|NamedTuple|ModuleType|ArgumentParser"
               r"|Namespace|PreTrainedModel|PretrainedConfig|ModelOutput|nn\..*|F\..*)"),
    # the command line's modules: their reference is the CLI page, generated from the parsers
    (r"py:.*", r"gnn_transformer\.cli(\..*)?"),
    # classes PyG generates for its message-passing templates, named in inherited signatures
    (r"py:class", r".*\.CollectArgs"),
    # GraphSequenceModel.graph: a plain attribute (a part of the model), described in the class docstring
    (r"py:attr", r"graph"),
    # the type alias of an activation argument (core.layers.Activation: a name or a callable)
    (r"py:class", r"Activation"),
    # GrowingCausalGraph/GrowingSeq2SeqGraph.attention: inherited from their private base class
    (r"py:meth", r"attention"),
    # private helpers named in signatures (base classes, internal layouts)
    (r"py:.*", r"(.*\.)?_[A-Za-z].*"),
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|None|object|type|callable|optional"
               r"|ValueError|TypeError|RuntimeError|AssertionError|IndexError|KeyError|OSError"
               r"|Exception|SystemExit|NotImplementedError)"),
]

# ---- sphinx-gallery: examples/ are the tutorials, executed at build time ----
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "tutorials",
    # Executed: the numbered tutorials.  explorer_screenshot.py needs Chromium and writes
    # docs/images/explorer.png; it is shown, not run (the page it photographs is embedded instead).
    "filename_pattern": r"/\d\d_[^/]*\.py$",
    "ignore_pattern": r"__init__\.py",
    "reset_argv": "gallery_outputs.example_argv",
    "image_scrapers": ("gallery_outputs.saved_figures",),
    "matplotlib_animations": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "plot_gallery": os.environ.get("GNN_TRANSFORMER_DOCS_RUN_EXAMPLES", "1") != "0",
}

# ---- HTML ----
html_theme = "furo"
html_title = f"gnn-transformer {release}"
GENERATED_STATIC = DOCS / "_build" / "generated-static"
GENERATED_STATIC.mkdir(parents=True, exist_ok=True)
html_static_path = [str(GENERATED_STATIC)]
GENERATED_EXTRA = DOCS / "_build" / "generated-extra"
GENERATED_EXTRA.mkdir(parents=True, exist_ok=True)
html_extra_path = [str(GENERATED_EXTRA)]
html_show_sourcelink = False
html_last_updated_fmt = None
mathjax_path = "mathjax/tex-svg.js"
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}


def _copy_mathjax(app):
    """Serve MathJax from the site itself: the single-file SVG build, no fonts to fetch."""
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    source = None if spec is None else Path(spec.submodule_search_locations[0]) / "static" / "mathjax" / "es5" / "tex-svg.js"
    if source is None or not source.is_file():
        raise RuntimeError("MathJax not found: install the docs extra (pip install -e '.[docs]'), "
                           "which brings django-static-mathjax's copy of MathJax 3")
    target = GENERATED_STATIC / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "tex-svg.js").is_file():
        shutil.copyfile(source, target / "tex-svg.js")


def _explorer_page(app):
    """The explorer's page of the demo model, embedded in the explain-and-explore page."""
    from gnn_transformer.explorer import explore

    target = GENERATED_EXTRA / "explorer-demo.html"
    if not target.is_file():
        explore().save(target)


def setup(app):
    app.connect("builder-inited", _copy_mathjax)
    app.connect("builder-inited", _explorer_page)
