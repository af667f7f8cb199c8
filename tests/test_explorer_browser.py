"""The explorer page in a real browser: headless Chromium driven by Playwright (the ``browser``
fixture, shared with tests/test_explorer_hf.py, is in conftest.py).

Skipped when Playwright or Chromium is missing, unless GNN_TRANSFORMER_REQUIRE_BROWSER=1
(then such a machine fails, naming what to install).
"""

import pytest
import torch

from gnn_transformer.cli.graph import _build
from gnn_transformer.tasks.demo import demo_batch, demo_model
from gnn_transformer.explorer import explore
from gnn_transformer.explorer.browser import offline_page, screenshot
from gnn_transformer.explorer.data import SIGNIFICANT_DIGITS
from gnn_transformer.explorer.sources import pattern_namespace
from gnn_transformer.analysis.recording import record

ROUNDING = 10.0 ** (1 - SIGNIFICANT_DIGITS) / 2  # relative error of the page's numbers
SOURCE, TARGET = ("the", "cat", "sat", "on", "a", "mat"), ("<s>", "le", "chat", "sur")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model on a longer sentence pair: its page and, independently, its recorded attention."""
    path = explore(source=list(SOURCE), target=list(TARGET)).save(tmp_path_factory.mktemp("explorer") / "demo.html")
    model, vocabulary = demo_model()
    with record(model) as recording:
        model(demo_batch(vocabulary, SOURCE, TARGET))
    return path, recording


class Opened:
    """A page opened offline with its console errors, page errors and refused requests collected."""

    def __init__(self, browser, path):
        self.page, self.refused = offline_page(browser)
        self.errors = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("#graph .edge")

    def choose(self, kind, layer, head):
        """Through the controls: ``layer`` and ``head`` count from 0 here, from 1 on the page."""
        head = "mean" if head == "mean" else str(head + 1)
        for control, value in (("#kind", kind), ("#layer", str(layer + 1)), ("#head", head)):
            assert self.page.select_option(control, value=value) == [value]

    def drawn_edges(self):
        return self.page.eval_on_selector_all("#graph .edge", """paths => paths.map(p => ({
            source: +p.dataset.source, target: +p.dataset.target, weight: +p.dataset.weight,
            score: +p.dataset.score, width: +p.getAttribute('stroke-width'),
            opacity: +p.getAttribute('stroke-opacity')}))""")

    def cells(self, selector):
        return self.page.eval_on_selector_all(selector, """cells => cells.map(c => ({
            source: +c.dataset.source, target: +c.dataset.target, weight: +c.dataset.weight}))""")


@pytest.fixture
def opened(browser, demo):
    page = Opened(browser, demo[0])
    yield page
    page.page.close()


def expected_edges(entry, head):
    weights = entry.weights.mean(1) if head == "mean" else entry.weights[:, head]  # (num_edges,)
    scores = entry.scores.mean(1) if head == "mean" else entry.scores[:, head]
    return {(j, i): (float(w), float(s)) for (j, i), w, s in zip(entry.edge_index.t().tolist(), weights, scores)}


def test_page_loads_offline_without_errors(opened):
    assert opened.errors == []
    assert opened.refused == []  # every request other than file:// would be aborted and listed here
    assert opened.page.title().startswith("demo model (untrained): the cat sat on a mat")
    assert len(opened.drawn_edges()) == len(SOURCE) ** 2  # encoder self-attention, layer 1, head 1


@pytest.mark.parametrize("kind, layer, head", [("encoder self", 0, 0), ("encoder self", 1, 1), ("decoder self", 1, 0),
                                               ("cross", 0, 1), ("cross", 1, 0), ("cross", 1, "mean")])
def test_the_controls_draw_the_models_weights(opened, demo, kind, layer, head):
    encoding = opened.page.evaluate("window.gnnExplorer.encoding")
    opened.choose("encoder self", 0, 0)  # start elsewhere, then switch through the controls
    opened.choose(kind, layer, head)
    expected = expected_edges(demo[1].attention_of(kind, layer), head)
    drawn = opened.drawn_edges()
    assert {(e["source"], e["target"]) for e in drawn} == set(expected) and len(drawn) == len(expected)
    for edge in drawn:
        weight, score = expected[edge["source"], edge["target"]]
        tolerance = ROUNDING * (1 + (head == "mean"))  # the mean of rounded weights: twice the rounding
        assert edge["weight"] == pytest.approx(weight, rel=tolerance, abs=1e-9)
        assert edge["score"] == pytest.approx(score, rel=tolerance, abs=1e-9)
        # what the eye sees: the stroke's width and opacity encode the weight
        assert edge["width"] == pytest.approx(encoding["minWidth"] + encoding["widthPerWeight"] * weight, abs=1e-4)
        assert edge["opacity"] == pytest.approx(encoding["minOpacity"] + encoding["opacityPerWeight"] * weight,
                                                abs=1e-4)
    cells = opened.cells("#heatmap .cell:not(.absent)")
    assert {(c["source"], c["target"]): pytest.approx(c["weight"], rel=tolerance) for c in cells} == {
        pair: w for pair, (w, _) in expected.items()}
    num_keys = len(TARGET) if kind == "decoder self" else len(SOURCE)
    num_queries = len(SOURCE) if kind == "encoder self" else len(TARGET)
    absent = opened.cells("#heatmap .cell.absent")
    assert len(absent) == num_keys * num_queries - len(expected)  # the causal graph's missing edges
    assert all((c["source"], c["target"]) not in expected for c in absent)


def test_hovering_an_edge_shows_its_score_and_weight(opened, demo):
    opened.choose("cross", 1, 1)
    page = opened.page
    assert page.is_hidden("#tooltip")
    x, y = page.eval_on_selector_all("#graph .edge-hit", """hits => {  // the middle of the heaviest edge (on top)
        const hit = hits[hits.length - 1], m = hit.getScreenCTM();
        const p = hit.getPointAtLength(hit.getTotalLength() / 2);
        return [p.x * m.a + p.y * m.c + m.e, p.x * m.b + p.y * m.d + m.f]; }""")
    page.mouse.move(x, y)
    under = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y); "
                          "return [+e.dataset.source, +e.dataset.target]; }", [x, y])
    assert page.is_visible("#tooltip")
    weight, score = expected_edges(demo[1].attention_of("cross", 1), 1)[tuple(under)]
    assert float(page.inner_text("#tooltip .tip-weight")) == pytest.approx(weight, abs=6e-5)
    assert float(page.inner_text("#tooltip .tip-score")) == pytest.approx(score, abs=6e-5)
    title = page.inner_text("#tooltip .tip-title")
    assert title == f"{SOURCE[under[0]]} \u2192 {TARGET[under[1]]}"
    assert page.eval_on_selector_all("#graph .edge.active", "e => e.length") == 1
    page.mouse.move(1, 1)
    assert page.is_hidden("#tooltip")


@pytest.mark.parametrize("name, options", [("window", {"n": 8, "radius": 1}), ("rows", {"text_length": 2}),
                                           ("star", {"n": 6})])
def test_a_pattern_page_draws_exactly_the_patterns_edges(browser, tmp_path, name, options):
    path = explore(pattern=name, pattern_options=options).save(tmp_path / f"{name}.html")
    expected = sorted(map(tuple, _build(pattern_namespace(name, **options)).edge_index.t().tolist()))
    opened = Opened(browser, path)
    try:
        for layer in (0, 1):
            opened.choose("encoder self", layer, "mean")
            assert sorted((e["source"], e["target"]) for e in opened.drawn_edges()) == expected
        assert opened.errors == [] and opened.refused == []
    finally:
        opened.page.close()


def test_screenshot_is_a_picture_of_the_page(browser, demo, tmp_path):
    import matplotlib.image

    def hover_a_token(page):
        page.select_option("#kind", "cross")
        page.hover('#graph .node.query[data-index="2"]')

    png = screenshot(demo[0], tmp_path / "explorer.png", width=1100, height=500, prepare=hover_a_token,
                     browser=browser)
    image = matplotlib.image.imread(png)  # (height, width, channels) in [0, 1]
    assert image.shape[1] == 1100 and image.shape[0] >= 500
    colours = torch.from_numpy(image[..., :3].reshape(-1, 3).copy())
    assert len(torch.unique((colours * 255).round().int(), dim=0)) > 200  # text, edges, the heatmap's blues
    assert colours.std(0).min() > 0.05


def test_the_notebook_view_runs_isolated_in_its_iframe(browser, tmp_path):
    """What Jupyter shows (``_repr_html_``: the page in a sandboxed iframe) draws the same edges."""
    explorer = explore()
    host = tmp_path / "notebook.html"
    host.write_text(f"<!DOCTYPE html><html><body><p>a notebook cell</p>{explorer._repr_html_()}</body></html>",
                    encoding="utf-8")
    page, refused = offline_page(browser)
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        page.goto(host.resolve().as_uri())
        frame = page.frame_locator("iframe")
        frame.locator("#graph .edge").first.wait_for()
        first_view = explorer.data["views"][0]
        assert frame.locator("#graph .edge").count() == len(first_view["edges"])
        assert page.locator("#graph").count() == 0  # nothing leaks into the notebook's own page
        assert errors == [] and refused == []
    finally:
        page.close()
