"""Decoding with the dense ``torch.nn`` references: padded tensors, masks, a full forward per step.

These scorers plug into the same strategies as the graph paths
(:func:`gnn_transformer.generation.greedy`, ``beam_search``, ``sample``), so a test can
decode one model three ways -- growing graph, recomputed graph, ``torch.nn.Transformer``
with the same weights -- and compare tokens and log-probabilities.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..generation.recompute import PrefixScorer
from .dense_models import DenseSingleStackModel, DenseTransformerModel

__all__ = ["DenseSeq2SeqDecoding", "DenseCausalDecoding"]


def _padded(sequences: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-padded (n, L) token ids (padding 0) and the lengths (n,)."""
    lengths = torch.tensor([s.numel() for s in sequences], device=sequences[0].device)
    out = torch.zeros(len(sequences), int(lengths.max()), dtype=torch.long, device=sequences[0].device)
    for row, sequence in zip(out, sequences):
        row[: sequence.numel()] = sequence
    return out, lengths


def _last(logits: Tensor, lengths: Tensor) -> Tensor:
    """Log-probabilities at the last real position of each row: (n, L, V) -> (n, V)."""
    rows = torch.arange(logits.size(0), device=logits.device)
    return torch.log_softmax(logits[rows, lengths - 1], dim=-1)


class DenseSeq2SeqDecoding(PrefixScorer):
    """A :class:`~gnn_transformer.GraphTransformerModel` decoded by its ``torch.nn.Transformer`` twin."""

    def __init__(self, graph_model, sources: Sequence[Tensor], bos: int) -> None:
        self.dense = DenseTransformerModel(graph_model).eval()
        self.sources = [torch.as_tensor(s).long() for s in sources]
        super().__init__([torch.tensor([bos]) for _ in self.sources])

    def _score(self, group, prefixes):
        src, src_lengths = _padded([self.sources[g] for g in group.tolist()])
        tgt, tgt_lengths = _padded(prefixes)
        return _last(self.dense(src, tgt, src_lengths, tgt_lengths), tgt_lengths)


class DenseCausalDecoding(PrefixScorer):
    """A :class:`~gnn_transformer.GraphDecoderModel` decoded by its ``torch.nn.TransformerEncoder`` twin
    with a causal mask."""

    def __init__(self, graph_model, prompts: Sequence[Tensor]) -> None:
        self.dense = DenseSingleStackModel(graph_model, causal=True).eval()
        super().__init__([torch.as_tensor(p).long() for p in prompts])

    def _score(self, group, prefixes):
        tokens, lengths = _padded(prefixes)
        return _last(self.dense(tokens, lengths), lengths)
