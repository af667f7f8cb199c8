"""A tiny encoder-decoder and a sentence pair, small enough to print every number of a forward pass.

``explain`` and ``explore`` use it when no model is given: d_model 8, 2 heads of size 4,
2 encoder and 2 decoder layers, feed-forward size 16, no dropout, a word vocabulary, seeded
weights (untrained: the numbers show how the computation flows, not what a trained model
has learnt).

Example::

    >>> model, vocabulary = demo_model()
    >>> batch = demo_batch(vocabulary)          # "the cat sat" -> "<s> le chat"
    >>> model(batch).shape                      # one prediction per target token
    torch.Size([3, 13])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.model import GraphTransformerModel
from ..graphs.batching import seq2seq_batch
from .base import Vocabulary

__all__ = ["DemoConfig", "DEMO_WORDS", "DEMO_SOURCE", "DEMO_TARGET", "demo_model", "demo_batch"]

DEMO_WORDS = ("the", "cat", "sat", "on", "mat", "a", "dog", "le", "chat", "chien", "sur")
DEMO_SOURCE = ("the", "cat", "sat")
DEMO_TARGET = ("<s>", "le", "chat")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo model (the defaults are the ones ``explain`` prints)."""

    d_model: int = 8
    nhead: int = 2
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dim_feedforward: int = 16
    seed: int = 0
    dtype: torch.dtype = torch.float32


def demo_model(config: DemoConfig = DemoConfig(), words: Sequence[str] = DEMO_WORDS):
    """The seeded demo model (eval mode, one shared word vocabulary) and its :class:`Vocabulary`."""
    vocabulary = Vocabulary(list(words))
    generator = torch.random.fork_rng()
    with generator:
        torch.manual_seed(config.seed)
        model = GraphTransformerModel(
            len(vocabulary), d_model=config.d_model, nhead=config.nhead,
            num_encoder_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
            dim_feedforward=config.dim_feedforward, dropout=0.0, dtype=config.dtype,
        )
    return model.eval(), vocabulary


def demo_batch(vocabulary: Vocabulary, source: Sequence[str] = DEMO_SOURCE, target: Sequence[str] = DEMO_TARGET):
    """One sentence pair as a graph batch: complete, causal and bipartite edges.

    ``target`` is what the decoder is fed (teacher forcing: it starts with ``<s>`` and each
    position predicts the next word).  Words must be in the vocabulary (a clear error names
    the unknown ones).
    """
    if not source or not target:
        raise ValueError("the demo needs at least one source and one target word")
    src = torch.tensor(vocabulary.encode(list(source)))
    tgt = torch.tensor(vocabulary.encode(list(target)))
    return seq2seq_batch([src], [tgt])
