"""Model runs the explorer shows: the demo model, a pattern's token graph, a trained checkpoint.

* :func:`demo_data` -- the seeded demo encoder-decoder (:mod:`gnn_transformer.tasks.demo`) on a
  sentence pair;
* :func:`pattern_data` -- a small seeded encoder-only model whose self-attention runs on the
  edges of one of the patterns of the registry (:mod:`gnn_transformer.graphs.patterns.registry`,
  the patterns of ``gnn-transformer graph``; tokens ``t0 .. tN``);
* :func:`checkpoint_data` -- a model trained by ``gnn-transformer train TASK`` (a seq2seq task)
  on one held-out sentence: the decoder is fed the model's own greedy translation, so the
  cross-attention shown is the alignment it decodes with.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import torch

from ..graphs.patterns.registry import build_pattern, pattern_options
from ..tasks.demo import DEMO_SOURCE, DEMO_TARGET, demo_batch, demo_model
from .data import run_data

__all__ = ["demo_data", "pattern_data", "pattern_namespace", "checkpoint_data", "PATTERN_MODEL"]

# The model that runs on a pattern's edges: as small as the demo model, seeded.
PATTERN_MODEL = dict(d_model=8, nhead=2, num_layers=2, dim_feedforward=16, dropout=0.0)


def demo_data(source: Sequence[str] = DEMO_SOURCE, target: Sequence[str] = DEMO_TARGET) -> dict:
    """The demo model on ``source`` -> ``target`` (words of :data:`gnn_transformer.tasks.demo.DEMO_WORDS`)."""
    model, vocabulary = demo_model()
    _encode(vocabulary, source, "source")
    _encode(vocabulary, target, "target")
    return run_data(model, demo_batch(vocabulary, source, target), vocabulary=vocabulary,
                    title="demo model (untrained): " + " ".join(source) + " \u2192 " + " ".join(target))


def pattern_namespace(name: str, **options) -> SimpleNamespace:
    """The options of pattern ``name`` with ``options`` set, as attributes (and ``pattern``, the name).

    Kept for callers of the flat layout; :func:`~gnn_transformer.graphs.patterns.pattern_options`
    gives the same values as a dict.  ``options`` use the Python names (``n=8``, ``radius=1``).
    """
    return SimpleNamespace(**pattern_options(name, **options), pattern=name)


def pattern_data(name: str, **options) -> dict:
    """A seeded 2-layer, 2-head single-stack model (the paper's parts) whose self-attention runs on pattern ``name``.

    Every layer uses the pattern's edge set, so the page's edges are exactly the pattern's.
    ``options`` as in :func:`~gnn_transformer.graphs.patterns.build_pattern`.
    """
    from torch_geometric.data import Data

    from ..core.model import GraphSequenceModel, paper_parts

    pattern = build_pattern(name, **options)
    num_nodes = pattern.num_nodes
    if num_nodes < 1:
        raise ValueError(f"pattern {name} has no tokens with these options; ask for at least one (--n 1 or more)")
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the paper's parts; the graph comes with the data: the pattern's edges
        model = GraphSequenceModel(**paper_parts(num_nodes, **PATTERN_MODEL)).eval()
    tokens = torch.arange(num_nodes)  # (N,) token k is its own word
    data = Data(x=tokens, position=tokens.clone(), edge_index=pattern.edge_index)
    return run_data(model, data, labels=[f"t{k}" for k in range(num_nodes)],
                    title=f"pattern {name}: {num_nodes} tokens, {pattern.edge_index.size(1)} edges",
                    layout=pattern.layout if pattern.layout in ("grid", "circle") else "line", grid=pattern.grid,
                    text_length=pattern.text_length, center=pattern.center)


def _encode(vocabulary, words: Sequence[str], side: str) -> list[int]:
    unknown = [word for word in words if word not in vocabulary.index]
    if unknown:
        known = ", ".join(vocabulary.symbols[2:])
        raise ValueError(f"{side} words not in the model's vocabulary: {unknown}; known words: {known}")
    return vocabulary.encode(list(words))


def checkpoint_data(directory: str | Path, source: str | Sequence[str] | None = None,
                    target: Sequence[str] | None = None) -> dict:
    """A trained model on one input (default: a held-out one).

    Seq2seq runs: ``source`` words (default: the longest of 20 held-out sentences); without
    ``target`` the decoder is fed ``<s>`` and the model's greedy translation (its last
    prediction is the end token), as during decoding; ``target`` words (starting with ``<s>``)
    are fed as they are (teacher forcing).  ``charlm`` runs: ``source`` is the text (default:
    40 held-out characters), read on the sliding-window causal graph the model was trained on.
    """
    from ..tasks.runs import load_run

    run = load_run(directory)
    if not run.is_seq2seq:
        if target is not None:
            raise ValueError("a decoder-only model reads one text: give it as source, without a target")
        return _language_model_data(run, source)
    return _seq2seq_checkpoint_data(run, source.split() if isinstance(source, str) else source, target)


def _language_model_data(run, text: str | Sequence[str] | None) -> dict:
    from ..tasks.text import visible_vocabulary

    text = run.held_out_example() if text is None else "".join(text)
    return run_data(run.model, run.language_model_data(text), vocabulary=visible_vocabulary(run.vocabulary),
                    title=f"{run.config['task']} after {run.step} training steps "
                          f"(attention window {run.attention_window}): {text!r}")


def _seq2seq_checkpoint_data(run, source: Sequence[str] | None, target: Sequence[str] | None) -> dict:
    from ..generation import generate
    from ..graphs import seq2seq_batch

    model, task = run.model, run.task
    source_ids = run.held_out_example() if source is None else _encode(task.src_vocab, source, "source")
    vocab = task.tgt_vocab
    if target is None:
        with torch.no_grad():
            tokens = generate(model, [torch.tensor(source_ids)], strategy="greedy", bos=vocab.bos, eos=vocab.eos,
                              max_new_tokens=task.max_target_length + 2)[0].tokens.tolist()
        target_ids = [vocab.bos, *tokens[:-1]] if tokens and tokens[-1] == vocab.eos else [vocab.bos, *tokens]
    else:
        target_ids = _encode(vocab, target, "target")
    batch = seq2seq_batch([torch.tensor(source_ids)], [torch.tensor(target_ids)])
    return run_data(model, batch, vocabulary=(task.src_vocab, vocab),
                    title=f"{task.name} after {run.step} training steps: " + " ".join(task.src_vocab.decode(source_ids)))

