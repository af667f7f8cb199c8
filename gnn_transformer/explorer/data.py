r"""The explorer's data: every attention of one model run, per kind and layer, as plain JSON.

One run of a model under :func:`gnn_transformer.analysis.recording.record` gives, for each attention
call, its edges :math:`j \to i` (source/key ``j``, target/query ``i``) and per head the score
and the weight

.. math::

    s_{ij} = \frac{q_i \cdot k_j}{\sqrt{d_k}} + b_{ij}, \qquad
    \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal N(i)} s_{ij}.

:func:`run_data` turns them into a dict that ``json.dumps`` writes as is::

    {"title": str, "layout": "line" | "grid" | "circle", "grid": [height, width] | None, "text_length": int,
     "center": [index, ...] (circle: the tokens drawn in the middle),
     "tokens": {"source": [label, ...], "target": [label, ...]},
     "predictions": {"side": "target" | "source", "labels": [argmax label per token]} | None,
     "kinds": [{"kind": "encoder self", "label": "encoder self"}, ...],
     "views": [{"kind", "layer", "keys": "source" | "target", "queries": "source" | "target",
                "heads": H, "edges": [[j, i], ...], "scores": [[s_h, ...], ...],
                "weights": [[alpha_h, ...], ...],
                "biases": [[b_h, ...], ...] (only where the attention adds a per-edge bias b_ij)}, ...],
     "ponder": {"max_steps": T, "source": [steps, ...], "target": [steps, ...]} | None}

``ponder`` is the ponder map of a model with adaptive computation time (``model.ponder_steps``,
:mod:`gnn_transformer.core.interface`): the steps each token took; its views show the shared
layers' last step.

Numbers keep :data:`SIGNIFICANT_DIGITS` significant digits; a score of :math:`-\infty` (a
blocked edge bias) is written ``null``.  A per-edge score bias (T5's relative position buckets,
ALiBi) is an edge feature: the page shows it on every edge it enters.  Single-stack models (:class:`GraphSequenceModel`: :class:`GraphEncoderModel`,
:class:`GraphDecoderModel`, ...) have one kind of attention, labelled ``"self"``, over the
``source`` tokens.
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from ..analysis.recording import Recording, record_inference
from ..tasks.base import token_labels, vocabulary_pair

__all__ = ["SIGNIFICANT_DIGITS", "KINDS", "round_value", "recording_views", "run_data"]

SIGNIFICANT_DIGITS = 6
KINDS = ("encoder self", "decoder self", "cross")
# (keys, queries) of each kind: which token list the sources and the targets of its edges index
_SIDES = {"encoder self": ("source", "source"), "decoder self": ("target", "target"), "cross": ("source", "target")}


def round_value(value: float) -> float | None:
    """``value`` to :data:`SIGNIFICANT_DIGITS` significant digits; ``None`` if not finite."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _rounded(tensor: Tensor) -> list:
    return [[round_value(v) for v in row] for row in tensor.double().tolist()]


def recording_views(recording: Recording) -> list[dict]:
    """One view per (kind, layer) of the recording's attention calls (the last call of each)."""
    views = {}
    for entry in recording.attention:
        if entry.kind not in _SIDES or entry.layer is None:
            continue
        keys, queries = _SIDES[entry.kind]
        views[entry.kind, entry.layer] = {
            "kind": entry.kind, "layer": entry.layer, "keys": keys, "queries": queries,
            "heads": entry.num_heads, "edges": entry.edge_index.t().tolist(),  # (num_edges, 2): [j, i]
            "scores": _rounded(entry.scores), "weights": _rounded(entry.weights),  # (num_edges, H) each
        }
        if entry.edge_bias is not None:  # a per-edge feature: T5's relative buckets, ALiBi
            views[entry.kind, entry.layer]["biases"] = _rounded(entry.edge_bias.expand_as(entry.scores))
    if not views:
        raise ValueError("the model ran no graph attention in a stack's layers "
                         "(GraphMultiheadAttention inside .encoder/.decoder layers); nothing to explore")
    return [views[key] for key in sorted(views, key=lambda key: (KINDS.index(key[0]), key[1]))]


def run_data(model: nn.Module, batch, *, vocabulary=None, labels: Sequence[str] | None = None,
             title: str | None = None, layout: str = "line", grid: tuple[int, int] | None = None,
             text_length: int = 0, center: Sequence[int] = ()) -> dict:
    """Run ``model`` on ``batch`` once (eval mode, no gradients), record its attention, return the explorer's data.

    Args:
        model: a :class:`GraphTransformerModel` (``batch`` a ``HeteroData`` from ``seq2seq_batch``)
            or a single-stack :class:`GraphSequenceModel` (such as :class:`GraphEncoderModel`; ``batch`` a
            PyG ``Data`` with ``x``, ``position``, ``edge_index``).
        vocabulary: names the tokens (and the predictions, the argmax of the logits); one
            :class:`Vocabulary` or a (source, target) pair.  Without it tokens show their ids.
        labels: names of the tokens of a single-stack batch, instead of the vocabulary's.
        title: the page's heading.
        layout: ``"line"`` (a sequence), ``"grid"`` (``text_length`` text tokens, then an
            image of ``grid = (height, width)`` tokens in raster order) or ``"circle"`` (a ring,
            with the ``center`` tokens, such as a star's relay, in the middle).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    source_vocab, target_vocab = vocabulary_pair(vocabulary)
    seq2seq = hasattr(batch, "node_types")
    if seq2seq and not {"src", "tgt"} <= set(batch.node_types):
        raise ValueError(f"a seq2seq batch has node types 'src' and 'tgt' (graphs.seq2seq_batch); "
                         f"got {batch.node_types}")
    if not seq2seq and getattr(batch, "x", None) is None:
        raise ValueError("batch must be a HeteroData from graphs.seq2seq_batch or a Data with x, position "
                         "and edge_index (graphs.sequence_data)")
    with record_inference(model) as recording:
        logits = model(batch)  # (T, vocab)
    source_ids = batch["src"].x if seq2seq else batch.x
    if labels is not None:
        if len(labels) != source_ids.numel():
            raise ValueError(f"{len(labels)} labels given for {source_ids.numel()} tokens")
        source = [str(label) for label in labels]
    else:
        source = token_labels(source_ids.tolist(), source_vocab, "source")
    target = token_labels(batch["tgt"].x.tolist(), target_vocab, "target") if seq2seq else []
    predictions = None
    if target_vocab is not None and logits.size(-1) == len(target_vocab):
        predictions = {"side": "target" if seq2seq else "source",
                       "labels": target_vocab.decode(logits.argmax(-1).tolist(), strip_end=False)}
    views = recording_views(recording)
    if not seq2seq:  # one stack: its self-attention (encoder or decoder self) runs on the batch's tokens
        for view in views:
            view["keys"] = view["queries"] = "source"
        kinds = [{"kind": kind, "label": "self"} for kind in KINDS if any(view["kind"] == kind for view in views)]
    else:
        kinds = [{"kind": kind, "label": kind} for kind in KINDS if any(view["kind"] == kind for view in views)]
    ponder = _ponder_map(model, batch) if seq2seq and callable(getattr(model, "ponder_steps", None)) else None
    default_title = " ".join(source) + (" \u2192 " + " ".join(target) if seq2seq else "")
    return {"title": title or default_title, "layout": layout, "grid": list(grid) if grid else None,
            "text_length": text_length, "center": list(center), "tokens": {"source": source, "target": target},
            "predictions": predictions, "kinds": kinds, "views": views, "ponder": ponder}


def _ponder_map(model: nn.Module, batch) -> dict:
    """The steps each source and target token took (``model.ponder_steps``, in eval mode), as lists."""
    was_training = model.training
    try:
        steps = model.eval().ponder_steps(batch)
    finally:
        model.train(was_training)
    return {"max_steps": int(steps["max_steps"]), "source": steps["source"].tolist(),
            "target": steps["target"].tolist()}
