"""The documentation site (docs/): its structure, its build, and the built pages in a browser.

Quick tests check what the build is made of without building: every public name gets an API
entry, every example is a sphinx-gallery tutorial, README is a front page whose links point at
docs pages, the CLI reference covers every subcommand, the docstring conventions are read as
intended.  The ``slow`` tests build the site as CI does (``python -m sphinx -W --keep-going -b
html docs docs/_build/html``, incremental: CI builds it in a step before the tests, so here it is
a check that nothing changed) and open it in headless Chromium.
"""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HTML = DOCS / "_build" / "html"
EXAMPLES = ROOT / "examples"

pytest.importorskip("sphinx")
pytest.importorskip("sphinx_gallery")
sys.path.insert(0, str(DOCS / "_ext"))

import api_pages  # noqa: E402
import cli_reference  # noqa: E402
import docstrings  # noqa: E402


def _public_objects() -> dict[int, list[str]]:
    """id -> every dotted public name of the object, walked here independently of api_pages."""
    names: dict[int, list[str]] = {}
    seen, queue = set(), ["gnn_transformer"]
    while queue:
        name = queue.pop(0)
        if name in seen or name == "gnn_transformer.cli":
            continue
        seen.add(name)
        module = importlib.import_module(name)
        for member in module.__all__:
            value = getattr(module, member)
            if isinstance(value, types.ModuleType):
                queue.append(value.__name__)
            else:
                names.setdefault(id(value), []).append(f"{name}.{member}")
    return names


def _generated_pages() -> dict[str, str]:
    entries = api_pages.canonical_entries()
    return {module.__name__: api_pages.page(module, entries) for module in api_pages.public_packages()}


def test_every_public_name_is_documented_exactly_once():
    pages = _generated_pages()
    documented = []
    for package, text in pages.items():
        for directive, name in re.findall(r"^\.\. (auto\w+|py:data):: (\S+)$", text, flags=re.M):
            if directive != "automodule":
                documented.append(f"{package}.{name}")
    public = _public_objects()
    assert len(documented) == len(set(documented))
    for ident, names in public.items():
        hits = [n for n in names if n in documented]
        assert len(hits) == 1, f"{names}: documented as {hits}, expected exactly one entry"
    assert len(documented) == len(public)


def test_every_public_package_has_a_page_and_lists_all_its_names():
    pages = _generated_pages()
    for package, text in pages.items():
        module = importlib.import_module(package)
        assert f".. automodule:: {package}" in text
        for member in module.__all__:
            if not isinstance(getattr(module, member), types.ModuleType):
                assert f":py:obj:`{member} <" in text, f"{package}.{member} missing from its summary"
    assert "gnn_transformer.graphs.patterns" in pages and "gnn_transformer.cli" not in pages


def test_every_example_is_a_gallery_tutorial_with_a_title():
    from sphinx_gallery.py_source_parser import split_code_and_text_blocks

    sys.path.insert(0, str(DOCS))
    conf = importlib.import_module("conf")
    pattern = re.compile(conf.sphinx_gallery_conf["filename_pattern"])
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert len(scripts) >= 6
    for script in scripts:
        _, blocks = split_code_and_text_blocks(str(script))[:2]
        kind, text, _ = blocks[0]
        lines = text.strip().splitlines()
        assert kind == "text" and len(lines) >= 2, f"{script.name}: no docstring header"
        assert set(lines[1]) == {"="} and len(lines[1]) >= len(lines[0]), f"{script.name}: no rST title"
        assert any(k == "code" for k, _, _ in blocks)
        executed = pattern.search("/" + script.name) is not None
        assert executed == (script.name != "explorer_screenshot.py"), script.name
    assert (EXAMPLES / "GALLERY_HEADER.rst").is_file()


README_COMMANDS = [
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e . && .venv/bin/gnn-transformer check',
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[test]" && .venv/bin/python -m pytest',
]


def _readme_links() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [t for t in re.findall(r"\]\(([^)#\s]+)", text) if not re.match(r"[a-z]+://", t)]


def test_readme_is_a_front_page_whose_links_point_into_the_docs():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 250
    commands = [l for l in lines if l.startswith("python3 -m venv")]
    assert commands[:2] == README_COMMANDS
    assert "python -m sphinx -W --keep-going -b html docs docs/_build/html" in text
    links = _readme_links()
    doc_links = [l for l in links if l.startswith("docs/") and l.endswith(".md")]
    assert len(doc_links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
    # every page README links to is in the site's table of contents
    toctrees = "".join(p.read_text() for p in DOCS.rglob("*.md") if "_build" not in p.parts)
    for link in doc_links:
        page = Path(link).relative_to("docs").with_suffix("")
        assert page.name in toctrees, f"{link} is not in any toctree"


@pytest.mark.slow
def test_api_pages_are_the_same_without_triton(tmp_path):
    """The docs extra does not bring Triton: the kernels' modules are imported with it mocked
    (``autodoc_mock_imports`` in conf.py) and give the same pages."""
    import json
    import sysconfig

    pytest.importorskip("triton")  # here: hide it, and compare with the pages made with it
    site = tmp_path / "site-packages-without-triton"
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith("triton"):
            (site / entry.name).symlink_to(entry)
    script = (
        "import importlib.util, json, sys\n"
        f"sys.path.insert(0, {str(DOCS / '_ext')!r})\n"
        "import api_pages\n"
        "from sphinx.ext.autodoc.mock import mock\n"
        "assert importlib.util.find_spec('triton') is None\n"
        f"sys.path.insert(0, {str(DOCS)!r})\n"
        "import conf\n"
        "with mock(conf.autodoc_mock_imports):\n"
        "    print(json.dumps([conf.autodoc_mock_imports, api_pages.generated_pages()]))\n"
    )
    result = subprocess.run([sys.executable, "-S", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])})
    assert result.returncode == 0, result.stderr[-4000:]
    mocked, pages = json.loads(result.stdout.splitlines()[-1])
    assert mocked == ["triton"]
    assert pages == api_pages.generated_pages()
    assert "gnn_transformer.backends.fused.triton_attention.rst" in pages


def test_cli_reference_covers_every_subcommand():
    from gnn_transformer.cli import SUBCOMMANDS

    assert cli_reference.subcommands([]) == list(SUBCOMMANDS)
    assert "--pattern" in cli_reference.parser_help(["explore"])
    assert cli_reference.subcommands(["experiment"])  # nested subcommands are listed too
    with pytest.raises(ValueError, match="no subcommand 'nope'"):
        cli_reference.parser_help(["nope"])


def test_docstring_args_spread_over_lines_are_joined_for_napoleon():
    lines = ["Args:", "    d_model, nhead,", "    dropout: as torch.", "    backend: which.", "", "Text."]
    assert docstrings.normalise(lines) == ["Args:", "    d_model, nhead, dropout: as torch.",
                                          "    backend: which.", "", "Text."]


def test_docstring_args_with_a_sentence_keep_the_sentence():
    lines = ["Args: as torch, plus:", "    backend: which.", "    norm: how."]
    assert docstrings.normalise(lines) == ["as torch, plus:", "", "Args:", "    backend: which.", "    norm: how."]
    # a one-line "Args: ..." with nothing indented under it is left alone
    assert docstrings.normalise(["Args: none.", "Text."]) == ["Args: none.", "Text."]


# ---- the built site ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def site():
    """Build the site as CI does (incremental into docs/_build/html); its path and the log."""
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                             str(DOCS), str(HTML)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return HTML, result.stdout + result.stderr


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(site):
    html, log = site
    assert "WARNING" not in log and "ERROR" not in log, log[-4000:]
    for page in ("index", "getting-started", "concepts", "conventions", "backends", "benchmarks", "cli",
                 "api/index", "api/generated/gnn_transformer", "tutorials/index", "search"):
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.slow
def test_every_example_is_rendered_and_every_numbered_one_executed(site):
    html, _ = site
    for script in sorted(EXAMPLES.glob("*.py")):
        page = (html / "tutorials" / f"{script.stem}.html").read_text()
        executed = script.name != "explorer_screenshot.py"
        assert ("sphx-glr-script-out" in page) == executed, script.name
        if executed and "viz.save(" in script.read_text():  # the scripts that save figures show them
            assert re.search(r'<img[^>]+src="../_images/sphx_glr_' + script.stem, page), f"{script.name}: no figure"


@pytest.mark.slow
def test_readme_links_resolve_in_the_built_site(site):
    html, _ = site
    for link in _readme_links():
        if link.startswith("docs/") and link.endswith(".md"):
            built = html / Path(link).relative_to("docs").with_suffix(".html")
            assert built.is_file(), f"README links to {link}; the site has no {built.relative_to(html)}"


@pytest.mark.slow
def test_the_inventory_holds_every_public_name(site):
    from sphinx.util.inventory import InventoryFile

    html, _ = site
    with open(html / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    data = inventory.data if hasattr(inventory, "data") else inventory
    names = {name for kind, entries in data.items() if kind.startswith("py:") for name in entries}
    for public in _public_objects().values():
        assert any(n in names for n in public), f"{public[0]} is not in objects.inv"


# ---- in a browser (the session's Chromium: tests/conftest.py) ----------------------------------

@pytest.fixture(scope="module")
def served(site):
    """The built site served over HTTP on localhost (as a docs host would: search fetches pages)."""
    import functools
    import http.server
    import threading

    html, _ = site
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


class _QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


def _open(browser, base: str, path: str, wait_for: str):
    """Open a page of the served site with every other host refused; the page, its console
    errors (and failed or 4xx requests) and the refused URLs."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    refused: list[str] = []
    errors: list[str] = []

    def refuse(route):
        refused.append(route.request.url)
        route.abort()

    page.route(lambda url: not url.startswith(base), refuse)
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}")
            if request.url.startswith(base) else None)
    page.on("response", lambda response: errors.append(f"{response.status}: {response.url}")
            if response.status >= 400 else None)
    page.goto(base + path)
    page.wait_for_selector(wait_for, timeout=30_000)
    page.wait_for_load_state("load")
    return page, errors, refused


def _broken_images(page) -> list[str]:
    return page.eval_on_selector_all("img", "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0)"
                                            ".map(i => i.getAttribute('src'))")


@pytest.mark.slow
def test_home_page_loads_with_its_picture(served, browser):
    page, errors, refused = _open(browser, served, "index.html", "article img")
    assert page.title().startswith("gnn-transformer")
    assert _broken_images(page) == [] and errors == [] and refused == []
    page.close()


@pytest.mark.slow
def test_tutorial_shows_its_output_and_figure(served, browser):
    page, errors, refused = _open(browser, served, "tutorials/05_rank_collapse.html", ".sphx-glr-script-out")
    figures = page.eval_on_selector_all("img.sphx-glr-single-img, img.sphx-glr-multi-img",
                                        "imgs => imgs.map(i => i.naturalWidth)")
    assert figures and all(width > 100 for width in figures)
    assert "mean relative residual" in page.inner_text(".sphx-glr-script-out >> nth=0")
    assert _broken_images(page) == [] and errors == [] and refused == []
    page.close()


@pytest.mark.slow
def test_tutorial_embeds_the_explorer_page_of_its_run(served, browser):
    # the explorer's page of the trained model, shown by sphinx-gallery from the cell's last
    # expression (its _repr_html_: an <iframe srcdoc> with scripts only), draws its token graph
    page, errors, refused = _open(browser, served, "tutorials/06_training_and_decoding.html",
                                  "iframe[srcdoc]")
    frame = page.frame_locator("iframe[srcdoc]")
    edges = frame.locator("#graph .edge")
    edges.first.wait_for(timeout=30_000)
    assert edges.count() > 0
    assert "reversing digits" in frame.locator("body").inner_text()
    assert _broken_images(page) == [] and errors == [] and refused == []
    page.close()


@pytest.mark.slow
def test_api_page_renders_its_math(served, browser):
    page, errors, refused = _open(browser, served, "api/generated/gnn_transformer.core.functional.html",
                                  "dl.py.function")
    # MathJax (served by the site itself) replaces every \( \) and \[ \] with an <mjx-container> SVG
    page.wait_for_selector("mjx-container svg", timeout=30_000)
    rendered = page.eval_on_selector_all("mjx-container", "nodes => nodes.length")
    unrendered = page.eval_on_selector_all("div.math, span.math",
                                           "nodes => nodes.filter(n => !n.querySelector('mjx-container')).length")
    assert rendered > 0 and unrendered == 0
    assert errors == [] and refused == []
    page.close()


@pytest.mark.slow
def test_search_page_finds_a_public_name_offline(served, browser):
    # Sphinx's search runs in the page on its own index (searchindex.js): no search server
    page, errors, refused = _open(browser, served, "search.html?q=graph_attention", "#search-results ul li a")
    page.wait_for_function("document.querySelector('#search-results p') !== null"
                           " && !document.querySelector('#search-results').textContent.includes('Searching')",
                           timeout=30_000)
    hits = page.eval_on_selector_all("#search-results ul li a", "links => links.map(a => a.textContent)")
    assert any("graph_attention" in hit for hit in hits), hits
    assert errors == [] and refused == []
    page.close()


# ---- the docstrings' examples ------------------------------------------------------------

# Every ``>>>`` example in the package's docstrings runs here, in its module's namespace plus
# the imports of the package docstring's quick start (torch, gnn_transformer as gt, graphs,
# patterns); the examples import what they use, so they also run on their own.  Lines that need
# files or a model of the reader's (a checkpoint folder, a saved Hugging Face model, writing a
# page) are shown as plain code blocks after the doctest, not as ``>>>`` lines.


def _docstring_examples():
    import doctest
    import pkgutil

    import gnn_transformer

    import torch

    from gnn_transformer import graphs, patterns

    quick_start = {"torch": torch, "gt": gnn_transformer, "graphs": graphs, "patterns": patterns}
    finder = doctest.DocTestFinder(exclude_empty=True)
    for info in pkgutil.walk_packages(gnn_transformer.__path__, "gnn_transformer."):
        if info.name.startswith("gnn_transformer.cli") or info.name.endswith("__main__"):
            continue
        for test in finder.find(importlib.import_module(info.name), extraglobs=quick_start):
            if test.examples:
                yield test


def test_docstring_examples_run():
    import doctest
    import io

    ran = []
    for test in _docstring_examples():
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        out = io.StringIO()
        runner.run(test, out=out.write)
        assert runner.failures == 0, out.getvalue()
        ran.append(test.name)
    assert "gnn_transformer.graphs.builders.complete" in ran and len(ran) >= 5
    # examples that were once fragments (they used a model or a batch from the text): now complete
    completed = {"gnn_transformer.analysis.recording", "gnn_transformer.backends.prepared",
                 "gnn_transformer.core.attention.GraphMultiheadAttention", "gnn_transformer.core.functional.graph_attention",
                 "gnn_transformer.explain", "gnn_transformer.explorer", "gnn_transformer.generation",
                 "gnn_transformer.graphs.patterns._build.union"}
    assert completed <= set(ran), completed - set(ran)
