"""``explain(model, batch)``: run one forward pass, record it, and lay it out stage by stage."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

from ..analysis.recording import record_inference
from ..core.model import GraphSequenceModel, GraphTransformerModel
from ..tasks.base import Vocabulary, token_labels, vocabulary_pair
from ..tasks.demo import demo_batch, demo_model
from .document import Stage
from .render_html import render_fragment, render_html
from .render_text import render_text
from .trace import trace_stages
from .universal import universal_stages

__all__ = ["Explanation", "explain", "MAX_DIGITS"]

MAX_DIGITS = 8
SUPPORTED = (GraphTransformerModel, GraphSequenceModel)  # GraphEncoderModel, GraphDecoderModel are the latter


def _ponders(model: nn.Module) -> bool:
    """A Universal Transformer (or any encoder-decoder whose nodes take their own number of steps): it has
    ``ponder_steps`` (:mod:`gnn_transformer.core.interface`)."""
    return callable(getattr(model, "ponder_steps", None))


def _is_seq2seq(model: nn.Module) -> bool:
    return isinstance(model, GraphTransformerModel) or _ponders(model)


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


def _check_batch(model: nn.Module, batch) -> None:
    if _is_seq2seq(model):
        if not (hasattr(batch, "node_types") and {"src", "tgt"} <= set(batch.node_types)):
            raise TypeError(f"a {type(model).__name__} is explained on a seq2seq batch (HeteroData with node types "
                            "'src' and 'tgt'); build one with gnn_transformer.graphs.seq2seq_batch([src], [tgt])")
    elif not all(hasattr(batch, key) for key in ("x", "position", "edge_index")) or hasattr(batch, "node_types"):
        raise TypeError(f"a {type(model).__name__} is explained on a Data with x, position and edge_index; build "
                        "one with gnn_transformer.graphs.sequence_data(tokens, graph)")


def _sentences(labels: list[str], store) -> list[str]:
    """The tokens of each sequence of a (collated) node store, quoted: ``["'the cat sat'", ...]``."""
    ptr = getattr(store, "ptr", None)
    bounds = ptr.tolist() if ptr is not None else [0, len(labels)]
    return [f"'{' '.join(labels[start:end])}'" for start, end in zip(bounds, bounds[1:])]


def _heading(model: nn.Module, batch, labels: dict[str, list[str]]) -> str:
    d_model = model.generator.in_features
    if _ponders(model):
        layers = f"1+1 layers shared by {model.num_steps} steps"
        pairs = zip(_sentences(labels["source"], batch["src"]), _sentences(labels["target"], batch["tgt"]))
        words = "; ".join(f"{source} -> {target}" for source, target in pairs)
        heads = model.encoder.layers[0].self_attn.num_heads
    elif isinstance(model, GraphTransformerModel):
        layers = f"{len(model.transformer.encoder.layers)}+{len(model.transformer.decoder.layers)} layers"
        pairs = zip(_sentences(labels["source"], batch["src"]), _sentences(labels["target"], batch["tgt"]))
        words = "; ".join(f"{source} -> {target}" for source, target in pairs)
        heads = model.transformer.encoder.layers[0].self_attn.num_heads
    else:
        layers = f"{len(model.encoder.layers)} layers"
        words = "; ".join(_sentences(labels["tokens"], batch))
        heads = model.encoder.layers[0].self_attn.num_heads
    return f"{type(model).__name__} (d_model {d_model}, {heads} heads, {layers}) on {words}"


def explain(model: nn.Module | None = None, batch=None, *, vocabulary: Vocabulary | Sequence[Vocabulary] | None = None,
            layers: int = 2, digits: int = 3, max_features: int = 16) -> Explanation:
    """Run one forward pass of ``model`` on ``batch`` and explain it stage by stage, with its numbers.

    Without a model, the seeded demo model (d_model 8, 2 heads, 2 encoder and 2 decoder layers)
    and its vocabulary are used; without a batch, "the cat sat" -> "<s> le chat".

    Args:
        model: a :class:`GraphTransformerModel`, or a :class:`GraphSequenceModel` with the paper's
            parts (:class:`GraphEncoderModel`, :class:`GraphDecoderModel`, or any graph), or a
            :class:`~gnn_transformer.variants.GraphUniversalTransformer` (its shared layers and ponder map).
            It runs in eval mode (no dropout) on the reference backend; its mode is restored afterwards.
        batch: the model's input (``graphs.seq2seq_batch`` for the encoder-decoder,
            ``graphs.sequence_data`` for a single stack).  Small inputs read best: every edge is a row.
        vocabulary: turns token ids into words; a (source, target) pair for two vocabularies;
            ``None`` shows ids as numbers.
        layers: how many layers of each stack are shown in full; later ones show their output only.
        digits: digits after the decimal point (1 to 8).
        max_features: vectors longer than this show their first ``max_features`` values and an ellipsis.

    Returns:
        an :class:`Explanation` (``.stages``, ``.text()``, ``.html()``, ``.save_html(path)``).
    """
    digits = _check_int("digits", digits, 1, MAX_DIGITS)
    layers = _check_int("layers", layers, 0)
    max_features = _check_int("max_features", max_features, 1)
    if model is None:
        model, demo_vocabulary = demo_model()
        vocabulary = demo_vocabulary if vocabulary is None else vocabulary
    elif not isinstance(model, SUPPORTED) and not _ponders(model):
        raise TypeError(f"explain supports {', '.join(cls.__name__ for cls in SUPPORTED)}, got "
                        f"{type(model).__name__}; record other modules with gnn_transformer.analysis.recording.record")
    elif isinstance(model, GraphSequenceModel) and model.graph is None:
        raise ValueError(f"explain names the graph a {type(model).__name__} attends over, but this one was built "
                         "without a graph: build it with graph=graphs.complete, graphs.causal or a pattern")
    source_vocabulary, target_vocabulary = vocabulary_pair(vocabulary)
    if batch is None:
        if not isinstance(model, GraphTransformerModel) or source_vocabulary is None:
            raise ValueError("give a batch for this model (explain builds the demo sentence pair only for an "
                             "encoder-decoder model with a vocabulary)")
        batch = demo_batch(source_vocabulary)
    _check_batch(model, batch)
    num_classes = model.generator.out_features
    if target_vocabulary is not None and len(target_vocabulary) != num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but the vocabulary has {len(target_vocabulary)} "
                         "symbols; pass the vocabulary the model was built for")
    if _is_seq2seq(model):
        labels = {"source": token_labels(batch["src"].x.tolist(), source_vocabulary, "source"),
                  "target": token_labels(batch["tgt"].x.tolist(), target_vocabulary, "target")}
    else:
        labels = {"tokens": token_labels(batch.x.tolist(), source_vocabulary, "input")}
    output_words = target_vocabulary.symbols if target_vocabulary is not None else [str(c) for c in range(num_classes)]
    with record_inference(model) as recording:
        model(batch)
    if _ponders(model):  # the shared layers, their last step, and the ponder map
        was_training = model.training
        ponder = model.eval().ponder_steps(batch)
        model.train(was_training)
        stages = universal_stages(model, batch, recording, ponder, labels, output_words, layers=layers,
                                  max_features=max_features)
    else:
        stages = trace_stages(model, batch, recording, labels, output_words, layers=layers, max_features=max_features)
    return Explanation(stages, digits, _heading(model, batch, labels))
