"""An interactive page of a model's token graphs: the attention of every kind, layer and head.

:func:`explore` runs a model once, records every attention as message passing
(:mod:`gnn_transformer.analysis.recording`) and returns an :class:`Explorer`, whose page shows the
tokens as nodes and the attention weights as edges (hover for score and weight) beside the
dense matrix.  The page is one HTML file with its CSS, JavaScript (plain JavaScript and SVG,
no library, nothing to bundle) and data inline; it opens offline.

Example::

    >>> from gnn_transformer.explorer import explore
    >>> page = explore()                          # the demo model: "the cat sat" -> "<s> le chat"
    >>> page
    Explorer('demo model (untrained): the cat sat → <s> le chat'; 6 attention views: encoder self, decoder self, cross)
    >>> page.html()[:15]                          # one self-contained page
    '<!DOCTYPE html>'
    >>> explore(pattern="window", pattern_options={"radius": 1, "n": 8})  # options of `graph`
    Explorer('pattern window: 8 tokens, 22 edges'; 2 attention views: self)

Writing the page, and the other sources (your model, a training run, a saved Hugging Face model)::

    page.save("explorer.html")                    # or, in Jupyter, just `page`
    explore(model, batch, vocabulary=vocab)       # your model
    explore(checkpoint="runs/translate")          # a trained model's alignment
    explore(hf="saved/t5-small", source="translate English to German: the cat")  # save_pretrained folder

The command line does the same: ``gnn-transformer explore --out page.html``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .data import run_data
from .page import iframe, render_page, save_page
from .sources import checkpoint_data, demo_data, pattern_data

__all__ = ["Explorer", "explore", "run_data"]


class Explorer:
    """The explorer of one model run: ``data`` (JSON-able dict), ``html()``, ``save(path)``; shows in Jupyter."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def html(self) -> str:
        """The self-contained page."""
        return render_page(self.data)

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (``.html``) and return the path."""
        return save_page(self.html(), path)

    def _repr_html_(self) -> str:
        return iframe(self.html())

    def __repr__(self) -> str:
        kinds = ", ".join(kind["label"] for kind in self.data["kinds"])
        return f"Explorer({self.data['title']!r}; {len(self.data['views'])} attention views: {kinds})"


def explore(model=None, batch=None, *, vocabulary=None, labels: Sequence[str] | None = None,
            pattern: str | None = None, checkpoint: str | Path | None = None,
            source: str | Sequence[str] | None = None, target: str | Sequence[str] | None = None,
            title: str | None = None, pattern_options: dict | None = None, hf=None) -> Explorer:
    """Run a model once and return the :class:`Explorer` of its attention.

    Give one of:

    * nothing: the demo model (:mod:`gnn_transformer.tasks.demo`) on ``source`` -> ``target`` words
      (default "the cat sat" -> "<s> le chat"; a string is split at spaces);
    * ``model`` and ``batch``: your model (a :class:`GraphTransformerModel` on a
      ``seq2seq_batch``, or a single-stack :class:`GraphSequenceModel` such as
      :class:`GraphDecoderModel` on a ``Data``); ``vocabulary`` (one or a (source, target) pair) or ``labels`` name the tokens;
    * ``pattern``: a pattern of ``gnn-transformer graph`` (``"window"``, ``"rows"``, ...) with
      its options in ``pattern_options`` (``{"n": 8, "radius": 1}``, the command's names with
      underscores); a small seeded encoder runs on its edges;
    * ``checkpoint``: a run folder of ``gnn-transformer train``: a seq2seq task shown on one
      held-out sentence (or on ``source``, fed ``target`` or its own greedy translation), or
      ``charlm`` on 40 held-out characters (or the text ``source``) on its window graph;
    * ``hf``: a Hugging Face GPT-2, BERT, BART or T5, as a ``save_pretrained`` directory or an
      imported graph model (:func:`gnn_transformer.convert.hf.from_hf`), run on ``source`` (text for
      the tokenizer saved beside it, else token ids separated by spaces) and, for BART and T5,
      ``target`` (default: its greedy continuation); see :mod:`.hf`.
    """
    if hf is not None:
        if any(value is not None for value in (model, pattern, checkpoint)):
            raise ValueError("give one of model (with batch), pattern, checkpoint or hf")
        from .hf import hf_data

        return Explorer(hf_data(hf, source, target, title=title))
    target = target.split() if isinstance(target, str) else target
    given = [name for name, value in (("model", model), ("pattern", pattern), ("checkpoint", checkpoint))
             if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of model (with batch), pattern or checkpoint, not {' and '.join(given)}")
    if pattern_options and pattern is None:
        raise ValueError(f"pattern_options {sorted(pattern_options)} were given without a pattern")
    if (model is None) != (batch is None):
        raise ValueError("give model and batch together (the batch the model reads), or neither")
    if pattern is not None:
        data = pattern_data(pattern, **(pattern_options or {}))
    elif checkpoint is not None:
        data = checkpoint_data(checkpoint, source, target)
    elif model is not None:
        data = run_data(model, batch, vocabulary=vocabulary, labels=labels, title=title)
    else:
        source = source.split() if isinstance(source, str) else source
        words = {name: value for name, value in (("source", source), ("target", target)) if value is not None}
        data = demo_data(**words)
    if title is not None:
        data["title"] = title
    return Explorer(data)
