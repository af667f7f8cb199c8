"""Open explorer pages in headless Chromium (Playwright): screenshots, and the browser tests' launcher.

Needs the ``browser`` extra (``pip install 'gnn-transformer[browser]'``) and a Chromium: the
system's (Debian: ``apt-get install chromium``), found on ``PATH`` or named by the environment
variable ``GNN_TRANSFORMER_CHROMIUM``; Playwright's own download is not needed.  Pages are
opened from ``file://`` URLs with every other request refused, so a screenshot also shows
that the page needs no network.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

__all__ = ["CHROMIUM_ARGS", "find_chromium", "launch_chromium", "offline_page", "screenshot"]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable: ``$GNN_TRANSFORMER_CHROMIUM``, else the first of chromium/chrome on ``PATH``."""
    named = os.environ.get("GNN_TRANSFORMER_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_chromium(playwright):
    """A headless Chromium from a running ``sync_playwright()`` context; a clear error if none is installed."""
    executable = find_chromium()
    if executable is None:
        raise FileNotFoundError("no Chromium found: install it (Debian: apt-get install chromium) or name it "
                                "with GNN_TRANSFORMER_CHROMIUM=/path/to/chromium")
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def offline_page(browser, *, width: int = 1280, height: int = 800, scale: float = 1.0):
    """A new page that aborts every request other than ``file://`` ones; returns (page, refused URLs)."""
    page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=scale)
    refused: list[str] = []

    def refuse(route):
        refused.append(route.request.url)
        route.abort()

    page.route(lambda url: not url.startswith("file:"), refuse)
    return page, refused


def screenshot(page_path: str | Path, png_path: str | Path, *, width: int = 1280, height: int = 800,
               scale: float = 1.0, prepare: Callable | None = None, browser=None) -> Path:
    """Open the explorer page ``page_path`` and save a full-page PNG to ``png_path``.

    ``prepare(page)`` may choose a view or hover something first; ``browser``: a launched
    Playwright browser to reuse (otherwise one is started and closed).
    """
    page_path, png_path = Path(page_path).resolve(), Path(png_path)
    if browser is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            launched = launch_chromium(playwright)
            try:
                return screenshot(page_path, png_path, width=width, height=height, scale=scale, prepare=prepare,
                                  browser=launched)
            finally:
                launched.close()
    page, refused = offline_page(browser, width=width, height=height, scale=scale)
    try:
        page.goto(page_path.as_uri())
        page.wait_for_selector("#graph .edge")
        if prepare is not None:
            prepare(page)
        if refused:
            raise RuntimeError(f"the page asked the network for {refused}")
        png_path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(png_path), full_page=True)
    finally:
        page.close()
    return png_path
