"""``explain(model, batch)``: run one forward pass, record it, and lay it out stage by stage."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

from ..analysis.recording import record_inference
from ..core.interface import PONDERING, RECORDING, require_interface
from ..tasks.base import Vocabulary, token_labels, vocabulary_pair
from ..tasks.demo import demo_batch, demo_model
from .document import Stage
from .render_html import render_fragment, render_html
from .render_text import render_text
from .trace import Side, stacks_of, trace_stages
from .universal import ponder_stages

__all__ = ["Explanation", "explain", "MAX_DIGITS"]

MAX_DIGITS = 8


@dataclass
class Explanation:
    """The stages of one forward pass, with the tensors' values, ready to print or to save.

    Attributes:
        stages: every :class:`~.document.Stage` in the order the model computes them.
        digits: digits after the decimal point in the text and the page.
        heading: one line naming the model and its input.
    """

    stages: list[Stage]
    digits: int
    heading: str

    def stage(self, key: str) -> Stage:
        """The stage with this key, e.g. ``"encoder.0.self_attention"``."""
        for stage in self.stages:
            if stage.key == key:
                return stage
        raise KeyError(f"no stage {key!r}; stages: {[s.key for s in self.stages]}")

    def text(self) -> str:
        """The explanation as plain text for a terminal (lines of at most about 110 characters)."""
        return render_text(self.stages, self.digits, self.heading)

    def html(self) -> str:
        """The explanation as one self-contained HTML page (inline CSS, no script, no external resource)."""
        return render_html(self.stages, self.digits, self.heading)

    def save_html(self, path: str | Path) -> Path:
        """Write :meth:`html` to ``path`` (UTF-8) and return the path."""
        path = Path(path)
        path.write_text(self.html(), encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        return render_fragment(self.stages, self.digits, self.heading)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"Explanation({len(self.stages)} stages, digits={self.digits}: {self.heading})"


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def _is_seq2seq(model: nn.Module) -> bool:
    """Whether the model has cross-attention (asked through ``attention_sites()``)."""
    return any(site.kind == "cross" for site in model.attention_sites())


def _check_batch(model: nn.Module, batch, seq2seq: bool) -> None:
    if seq2seq:
        if not (hasattr(batch, "node_types") and {"src", "tgt"} <= set(batch.node_types)):
            raise TypeError(f"a {type(model).__name__} (encoder-decoder: its attention_sites() include cross-attention) "
                            "is explained on a seq2seq batch (HeteroData with node types 'src' and 'tgt'); build one "
                            "with gnn_transformer.graphs.seq2seq_batch([src], [tgt])")
    elif not all(hasattr(batch, key) for key in ("x", "position", "edge_index")) or hasattr(batch, "node_types"):
        raise TypeError(f"a {type(model).__name__} (one stack) is explained on a Data with x, position and edge_index; "
                        "build one with gnn_transformer.graphs.sequence_data(tokens, graph)")


def _lengths(store) -> list[int]:
    """Tokens per sequence of a (collated) node store; one sequence when it is not a batch."""
    ptr = getattr(store, "ptr", None)
    return ptr.diff().tolist() if ptr is not None else [store.num_nodes]


def _sentences(labels: Sequence[str], lengths: Sequence[int]) -> list[str]:
    """The tokens of each sequence, quoted: ``["'the cat sat'", ...]``."""
    bounds = [0, *itertools.accumulate(lengths)]
    return [f"'{' '.join(labels[start:end])}'" for start, end in zip(bounds, bounds[1:])]


def _heading(model: nn.Module, sides: dict[str, Side], ponder: dict | None) -> str:
    stacks = stacks_of(model)
    attention = stacks[0].site.module
    d_model = attention.embed_dim
    layers = "+".join(str(len(stack.module.layers)) for stack in stacks) + " layers"
    if ponder is not None:
        layers += f" shared by {ponder['max_steps']} steps"
    if "source" in sides:
        pairs = zip(_sentences(sides["source"].labels, sides["source"].lengths),
                    _sentences(sides["target"].labels, sides["target"].lengths))
        words = "; ".join(f"{source} -> {target}" for source, target in pairs)
    else:
        words = "; ".join(_sentences(sides["tokens"].labels, sides["tokens"].lengths))
    return f"{type(model).__name__} (d_model {d_model}, {attention.num_heads} heads, {layers}) on {words}"


def _ponder_map(model: nn.Module, batch) -> dict | None:
    """The steps each node took (``model.ponder_steps(batch)`` in eval mode, the optional ``PONDERING``
    part of :mod:`gnn_transformer.core.interface`), or ``None`` for a model that does not ponder."""
    ponder_steps = getattr(model, PONDERING[0], None)
    if not callable(ponder_steps):
        return None
    was_training = model.training
    try:
        model.eval()
        return ponder_steps(batch)
    finally:
        model.train(was_training)


def _batch_run(model: nn.Module, batch, vocabulary):
    """(sides, logits, recording, output words, batch) of a library model on its graph batch."""
    seq2seq = _is_seq2seq(model)
    source_vocabulary, target_vocabulary = vocabulary_pair(vocabulary)
    if batch is None:
        if not seq2seq or source_vocabulary is None:
            raise ValueError("give a batch for this model (explain builds the demo sentence pair only for an "
                             "encoder-decoder model with a vocabulary)")
        batch = demo_batch(source_vocabulary)
    _check_batch(model, batch, seq2seq)
    with record_inference(model) as recording:
        logits = model(batch)  # (T, vocab)
    num_classes = logits.size(-1)
    if target_vocabulary is not None and len(target_vocabulary) != num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but the vocabulary has {len(target_vocabulary)} "
                         "symbols; pass the vocabulary the model was built for")
    if seq2seq:
        sides = {"source": Side(token_labels(batch["src"].x.tolist(), source_vocabulary, "source"),
                                _lengths(batch["src"]), batch["src"].position),
                 "target": Side(token_labels(batch["tgt"].x.tolist(), target_vocabulary, "target"),
                                _lengths(batch["tgt"]), batch["tgt"].position)}
    else:
        sides = {"tokens": Side(token_labels(batch.x.tolist(), source_vocabulary, "input"), _lengths(batch),
                                batch.position)}
    words = target_vocabulary.symbols if target_vocabulary is not None else [str(c) for c in range(num_classes)]
    return sides, logits, recording, words, batch


def explain(model: nn.Module | None = None, batch=None, *, vocabulary: Vocabulary | Sequence[Vocabulary] | None = None,
            layers: int = 2, digits: int = 3, max_features: int = 16, hf=None, source=None, target=None,
            tokenizer=None, token_types: Sequence[int] | None = None) -> Explanation:
    """Run one forward pass of ``model`` on ``batch`` and explain it stage by stage, with its numbers.

    Without a model, the seeded demo model (d_model 8, 2 heads, 2 encoder and 2 decoder layers)
    and its vocabulary are used; without a batch, "the cat sat" -> "<s> le chat".

    Args:
        model: any model implementing :mod:`gnn_transformer.core.interface` whose stacks are the
            library's layers: the paper's model, :class:`GraphSequenceModel` (:class:`GraphEncoderModel`,
            :class:`GraphDecoderModel`, ``GraphVariantModel``, any graph), or one whose nodes ponder
            (``GraphUniversalTransformer``: its shared layers' last step and each side's ponder map).
            It runs in eval mode (no dropout) on the reference backend; its mode is restored afterwards.
        batch: the model's input (``graphs.seq2seq_batch`` for an encoder-decoder model,
            ``graphs.sequence_data`` for a single stack).  Small inputs read best: every edge is a row.
        vocabulary: turns token ids into words; a (source, target) pair for two vocabularies;
            ``None`` shows ids as numbers.
        layers: how many layers of each stack are shown in full; later ones show their output only.
        digits: digits after the decimal point (1 to 8).
        max_features: vectors longer than this show their first ``max_features`` values and an ellipsis.
        hf: instead of ``model``: a Hugging Face GPT-2, BERT, BART or T5, as a ``save_pretrained``
            directory or an imported graph model (:func:`gnn_transformer.convert.hf.from_hf`), run on
            ``source`` (text for ``tokenizer`` or the tokenizer saved beside it; else token ids separated
            by spaces, or a list of ids) and, for BART and T5, ``target`` (default: its greedy
            continuation); ``token_types`` (BERT): the segment of every source token.

    Returns:
        an :class:`Explanation` (``.stages``, ``.text()``, ``.html()``, ``.save_html(path)``).
    """
    digits = _check_int("digits", digits, 1, MAX_DIGITS)
    layers = _check_int("layers", layers, 0)
    max_features = _check_int("max_features", max_features, 1)
    if hf is not None:
        if model is not None or batch is not None or vocabulary is not None:
            raise ValueError("give hf (with source, target, tokenizer) or model (with batch, vocabulary), not both")
        from .hf import hf_run

        model, (sides, logits, recording, words) = hf_run(hf, source, target, tokenizer, token_types)
        ponder = None
    else:
        unused = [name for name, value in (("source", source), ("target", target), ("tokenizer", tokenizer),
                                           ("token_types", token_types)) if value is not None]
        if unused:
            raise ValueError(f"{', '.join(unused)} go with hf=; a graph model reads its batch")
        if model is None:
            model, demo_vocabulary = demo_model()
            vocabulary = demo_vocabulary if vocabulary is None else vocabulary
        require_interface(model, RECORDING, "explain")
        sides, logits, recording, words, batch = _batch_run(model, batch, vocabulary)
        ponder = _ponder_map(model, batch)
    after = {} if ponder is None else ponder_stages(recording, ponder, sides)  # each stack's ponder map
    stages = trace_stages(model, sides, recording, logits, words, layers=layers, max_features=max_features,
                          after=after)
    return Explanation(stages, digits, _heading(model, sides, ponder))
