"""Decoding by recomputing the whole graph of every hypothesis at every step (no cache).

This is the literal definition of autoregressive decoding and the yardstick of the
incremental path in :mod:`gnn_transformer.generation.growth`: both must give the same
tokens and, within float tolerance, the same log-probabilities.  It costs a full forward
pass over every prefix per step, so it serves checks, not production.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch
from torch import Tensor

from ..graphs import causal, lengths_to_ptr
from ..graphs.batching import seq2seq_batch, sequence_data
from .growth import _as_token_list, _check_eval

__all__ = ["PrefixScorer", "RecomputedGraph", "RecomputedSeq2SeqGraph", "RecomputedCausalGraph"]


class PrefixScorer(ABC):
    """Hypotheses as explicit token prefixes; subclasses score the last position of each.

    Implements the scorer protocol of :mod:`gnn_transformer.generation.search` (``start``,
    ``extend``); subclasses define ``_score(group, prefixes) -> (n, V)`` log-probabilities of
    the token after each prefix, where ``group[h]`` is the input sequence of hypothesis ``h``.
    """

    def __init__(self, first_prefixes: list[Tensor]) -> None:
        self.first_prefixes = first_prefixes
        self.num_sequences = len(first_prefixes)

    @torch.no_grad()
    def start(self) -> Tensor:
        self.prefixes = list(self.first_prefixes)
        self.group = torch.arange(self.num_sequences)
        return self._score(self.group, self.prefixes)

    @torch.no_grad()
    def extend(self, parent: Tensor, token: Tensor) -> Tensor:
        parent, token = parent.cpu(), token.cpu()
        self.prefixes = [torch.cat([self.prefixes[p], token[h : h + 1].to(self.prefixes[p].device)])
                         for h, p in enumerate(parent.tolist())]
        self.group = self.group[parent]
        return self._score(self.group, self.prefixes)

    def attention(self, row: int):
        raise ValueError("attention weights per step come from the incremental path (GrowingSeq2SeqGraph, "
                         "GrowingCausalGraph); recomputed decoding does not record them")

    @abstractmethod
    def _score(self, group: Tensor, prefixes: list[Tensor]) -> Tensor:
        """(n, V) log-probabilities of the token after each prefix."""


def _last_of_each(lengths: Sequence[int]) -> Tensor:
    return lengths_to_ptr(list(lengths))[1:] - 1  # (n,)


class RecomputedSeq2SeqGraph(PrefixScorer):
    """Every step builds the seq2seq graph of each (source, prefix) pair anew and runs the whole model."""

    def __init__(self, model, sources: Sequence[Tensor], bos: int) -> None:
        _check_eval(model)
        device = next(model.parameters()).device
        self.model = model
        self.sources = _as_token_list(sources, "sources", device)
        super().__init__([torch.tensor([bos], device=device) for _ in self.sources])

    def _score(self, group, prefixes):
        batch = seq2seq_batch([self.sources[g] for g in group.tolist()], prefixes)
        logits = self.model(batch)  # (sum of prefix lengths, V)
        return torch.log_softmax(logits[_last_of_each([p.numel() for p in prefixes])], dim=-1)


class RecomputedCausalGraph(PrefixScorer):
    """Every step builds the causal graph of each prompt + continuation anew and runs the whole model
    (with ``attention_window``, the sliding-window graph ``graphs.causal(lengths, window)``)."""

    def __init__(self, model, prompts: Sequence[Tensor], attention_window: int | None = None) -> None:
        _check_eval(model)
        self.model, self.attention_window = model, attention_window
        super().__init__(_as_token_list(prompts, "prompts", next(model.parameters()).device))

    def _score(self, group, prefixes):
        from torch_geometric.data import Batch

        data = Batch.from_data_list([sequence_data(p, "causal") for p in prefixes])
        if self.attention_window is not None:
            data.edge_index = causal([p.numel() for p in prefixes], self.attention_window)
        logits = self.model(data)  # (sum of lengths, V)
        return torch.log_softmax(logits[_last_of_each([p.numel() for p in prefixes])], dim=-1)


class RecomputedGraph(PrefixScorer):
    """Every step decodes each whole prefix from an empty state, through the model's interface
    (:mod:`gnn_transformer.core.interface`): ``begin_decoding`` once per step, then one
    ``decode_step`` over the causal graph of every prefix, with no cache carried between steps.

    Any model implementing the interface; the reference of the growing graph (same tokens,
    log-probabilities equal to rounding).  ``attention_window`` as in :class:`GrowingGraph`.
    """

    def __init__(self, model, inputs: Sequence[Tensor], bos: int | None = None,
                 attention_window: int | None = None) -> None:
        from ..core.interface import DECODING, require_interface

        require_interface(model, DECODING, "decoding")
        _check_eval(model)
        self.model, self.bos, self.attention_window = model, bos, attention_window
        self.inputs = _as_token_list(inputs, "inputs", None)
        state, first = model.begin_decoding(self.inputs, bos=bos)
        if attention_window is not None and state.memory is not None:
            raise ValueError("attention_window applies to decoder-only models (sliding-window causal graphs)")
        super().__init__(first)

    def _score(self, group, prefixes):
        from ..graphs import positions

        state, _ = self.model.begin_decoding([self.inputs[g] for g in group.tolist()], bos=self.bos)
        lengths = [p.numel() for p in prefixes]
        device = prefixes[0].device
        owner = torch.arange(len(prefixes), device=device).repeat_interleave(torch.tensor(lengths, device=device))
        edges = causal(lengths, self.attention_window).to(device)
        logits, _ = self.model.decode_step(state, torch.cat(prefixes), positions(lengths).to(device), edges, owner)
        return torch.log_softmax(logits[_last_of_each(lengths).to(device)], dim=-1)
