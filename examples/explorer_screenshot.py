"""The explorer page, photographed
===============================

``gnn-transformer explore`` writes one HTML page of a model run: tokens as nodes, attention
weights as edges, the dense matrix beside them. This script writes such a page and takes the
screenshot README shows (``docs/images/explorer.png``) in headless Chromium, with one target
token hovered so that its in-edges and their weights show.

Run it with ``python examples/explorer_screenshot.py [RUN_DIR] [OUT_DIR]`` (``RUN_DIR`` may be ``""``): with ``RUN_DIR``, a run
of ``gnn-transformer train translate --out RUN_DIR`` (its alignment on a held-out sentence);
without, the untrained demo model.  ``RUN_DIR = t5`` photographs a Hugging Face T5 instead
(``docs/images/explorer_t5.png``): a small one with random weights and a word-level tokenizer,
written by ``save_pretrained`` and read back as ``gnn-transformer explore --hf DIR`` reads it,
with the encoder's self-attention shown and one edge hovered: its relative position bias, an
edge feature, beside its score and weight (needs the ``hf`` extra too). Needs ``pip install 'gnn-transformer[browser]'`` and a
Chromium (Debian: ``apt-get install chromium``).
"""

# %%
import sys
from pathlib import Path

from gnn_transformer.explorer import explore
from gnn_transformer.explorer.browser import screenshot

RUN = Path(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else None
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/images")
T5 = RUN is not None and str(RUN) == "t5"

# %%
# The page: a trained model's cross-attention (the last decoder layer) or the demo model's.

# %%
def t5_folder(folder: Path) -> Path:
    """A small random-weight T5 (vocabulary 128) and a word-level tokenizer, saved as save_pretrained does."""
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    from gnn_transformer.convert.hf.parity import small_model

    model = small_model("t5")
    words = ("<pad> </s> <unk> translate English to German : the cat sat on a mat die Katze sass auf einer Matte "
             "dog house small big").split()
    words += [f"w{i}" for i in range(model.config.vocab_size - len(words))]
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                            eos_token="</s>").save_pretrained(folder)
    return folder


if T5:
    import tempfile

    folder = t5_folder(Path(tempfile.mkdtemp()) / "t5")
    explorer = explore(hf=folder, source="translate English to German : the cat sat on a mat",
                       target="die Katze sass auf einer Matte",
                       title="T5 (random weights) as token graphs: encoder self-attention, relative position biases "
                             "on the edges")
    view = {"kind": "encoder self", "layer": "1", "head": "2"}
elif RUN is not None:
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
    if T5:  # the middle of one long edge: its tooltip shows the bias b_ij with the score and the weight
        x, y = tab.eval_on_selector_all("#graph .edge-hit", """hits => {
            const hit = hits.reduce((a, b) => (b.getTotalLength() > a.getTotalLength() ? b : a));
            const m = hit.getScreenCTM(), p = hit.getPointAtLength(hit.getTotalLength() / 2);
            return [p.x * m.a + p.y * m.c + m.e, p.x * m.b + p.y * m.d + m.f]; }""")
        tab.mouse.move(x, y)
        return
    target = len(explorer.data["tokens"]["target"]) * 2 // 3  # its tooltip opens over the graph, not the matrix
    tab.hover(f'#graph .node.query[data-index="{target}"]')


png = screenshot(page, OUT / ("explorer_t5.png" if T5 else "explorer.png"), width=1280, height=560, prepare=prepare)
page.unlink()  # the picture is the point; `gnn-transformer explore` writes pages
print(f"wrote {png}")
