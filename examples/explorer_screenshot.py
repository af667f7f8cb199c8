"""The explorer page, photographed
===============================

``gnn-transformer explore`` writes one HTML page of a model run: tokens as nodes, attention
weights as edges, the dense matrix beside them. This script writes such a page and takes the
screenshot README shows (``docs/images/explorer.png``) in headless Chromium, with one target
token hovered so that its in-edges and their weights show.

Run it with ``python examples/explorer_screenshot.py [RUN_DIR] [OUT_DIR]`` (``RUN_DIR`` may be ``""``): with ``RUN_DIR``, a run
of ``gnn-transformer train translate --out RUN_DIR`` (its alignment on a held-out sentence);
without, the untrained demo model. Needs ``pip install 'gnn-transformer[browser]'`` and a
Chromium (Debian: ``apt-get install chromium``).
"""

# %%
import sys
from pathlib import Path

from gnn_transformer.explorer import explore
from gnn_transformer.explorer.browser import screenshot

RUN = Path(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else None
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/images")

# %%
# The page: a trained model's cross-attention (the last decoder layer) or the demo model's.

# %%
if RUN is not None:
    explorer = explore(checkpoint=RUN)
    view = {"kind": "cross", "layer": str(max(v["layer"] for v in explorer.data["views"]) + 1), "head": "mean"}
else:
    explorer = explore(source=["the", "cat", "sat", "on", "a", "mat"], target=["<s>", "le", "chat", "sur"])
    view = {"kind": "cross", "layer": "2", "head": "1"}
page = explorer.save(OUT / "explorer.html")


# %%
# Choose the view through the page's own controls, hover one target token, photograph.

# %%
def prepare(tab):
    for control, value in view.items():
        tab.select_option(f"#{control}", value=value)
    target = len(explorer.data["tokens"]["target"]) * 2 // 3  # its tooltip opens over the graph, not the matrix
    tab.hover(f'#graph .node.query[data-index="{target}"]')


png = screenshot(page, OUT / "explorer.png", width=1280, height=560, prepare=prepare)
page.unlink()  # the picture is the point; `gnn-transformer explore` writes pages
print(f"wrote {png}")
