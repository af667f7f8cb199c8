r"""Explain one forward pass: every stage of the Transformer, in the order of the paper, with its numbers.

:func:`explain` runs a model (by default the seeded demo: d_model 8, 2 heads, 2 encoder and
2 decoder layers, "the cat sat" -> "<s> le chat") under :func:`~gnn_transformer.analysis.recording.record`
and returns an :class:`Explanation`: token embeddings, positional encodings and their sum; per
attention and per head the projections q, k, v of each token, per edge the score, the softmax
weight and the message, per node the aggregation, then the heads concatenated and projected;
add & norm (over the features of each token); the feed-forward network; the decoder's causal and
cross-attention edges; the logits and probabilities.  ``.text()`` prints aligned tables,
``.html()`` / ``.save_html(path)`` give the same as one page, and Jupyter shows it inline.

Example::

    >>> from gnn_transformer.explain import explain
    >>> explanation = explain()                  # the demo model and sentence pair
    >>> print(explanation.text())                # doctest: +ELLIPSIS
    GraphTransformerModel (d_model 8, 2 heads, 2+2 layers) on 'the cat sat' -> '<s> le chat'
    ...
    >>> weights = explanation.stage("encoder.0.self_attention").table("head 0: edges").column("weight")
    >>> [round(w, 2) for w in weights]           # one per edge of the complete graph of 3 tokens
    [0.17, 0.2, 0.63, 0.22, 0.24, 0.54, 0.14, 0.36, 0.51]
"""
from .document import Stage, Table
from .explanation import Explanation, explain

__all__ = ["explain", "Explanation", "Stage", "Table"]
