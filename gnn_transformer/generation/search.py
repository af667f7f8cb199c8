r"""Search strategies over a *scorer*: greedy decoding, sampling and beam search.

A scorer holds the live hypotheses of a ragged batch of input sequences and answers two calls:

* ``start() -> (B, V)``: one hypothesis per input sequence; the log-probabilities of its next token;
* ``extend(parent (n,), token (n,)) -> (n, V)``: new hypotheses, the ``h``-th being live
  hypothesis ``parent[h]`` followed by ``token[h]``; their next-token log-probabilities.
  Rows of the returned tensor are the new live hypotheses, in the order given.

(and ``attention(row)`` for the attention that built live hypothesis ``row``, where it
is recorded).  The strategies never look inside a scorer, so the graph-growing path
(:mod:`~gnn_transformer.generation.growth`), whole-graph recomputation
(:mod:`~gnn_transformer.generation.recompute`) and a dense ``torch.nn.Transformer``
(:mod:`gnn_transformer.testing.dense_decoding`) are decoded by the very same search,
and their agreement checks the models, not three searches.

Beam search follows "Attention Is All You Need" (section 6.1: beam size 4, length
penalty :math:`\alpha = 0.6`) with the length penalty of Wu et al. (arXiv:1609.08144):

.. math::

    s(Y) = \frac{\log P(Y \mid X)}{lp(Y)}, \qquad lp(Y) = \frac{(5 + |Y|)^\alpha}{(5 + 1)^\alpha}

where :math:`|Y|` counts the generated tokens, the end token included.  Each step
extends every live hypothesis of a pair by every token, keeps the ``2 K`` best
candidates, files those among the first ``K`` that end with the end token as finished,
and continues with the ``K`` best that do not.  A pair stops as soon as no live
hypothesis can beat its best finished one: log-probabilities only fall as a hypothesis
grows, so a live hypothesis with :math:`\log P = \ell` can at best reach
:math:`\ell / \max_{L} lp(L)` over the lengths :math:`L` it may still end at.  (Stopping at
``K`` finished hypotheses, as fairseq does, is cheaper but can stop before the best one
is found: short, improbable hypotheses fill the quota.)  At ``max_new_tokens`` the live
hypotheses are finished as they stand.  The answer is the finished hypothesis with the
best :math:`s(Y)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = ["Hypothesis", "Beams", "greedy", "sample", "beam_search", "length_penalty_factor"]


@dataclass
class Hypothesis:
    """One decoded sequence.

    Attributes:
        tokens: (T,) generated tokens, the end token included when it was reached.
        token_log_probs: (T,) the model's :math:`\\log p(y_t \\mid y_{<t}, x)` of each token
            (no temperature, no length penalty).
        score: the search's score: the sum of ``token_log_probs`` for greedy decoding and
            sampling, the length-normalised :math:`s(Y)` for beam search.
        finished: whether the sequence ended with the end token.
        attention: with ``return_attention``, per layer a dict ``{"self": AttentionGraph,
            "cross": AttentionGraph}`` (``"self"`` only for decoder-only models) holding the
            weights of every step that built this sequence; else ``None``.
    """

    tokens: Tensor
    token_log_probs: Tensor
    score: float
    finished: bool
    attention: list | None = None

    @property
    def log_prob(self) -> float:
        """:math:`\\log P(Y \\mid X)`, the sum of the per-token log-probabilities."""
        return float(self.token_log_probs.sum())


def length_penalty_factor(length: int, alpha: float) -> float:
    r""":math:`lp(Y) = ((5 + |Y|) / 6)^\alpha` of Wu et al. (2016); 1 for ``alpha = 0``."""
    return ((5.0 + length) / 6.0) ** alpha


def _check_steps(max_new_tokens: int) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")


def _check_eos(eos: int | None, vocab: int) -> None:
    if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < vocab):
        raise ValueError(f"eos must be a token id of the model's vocabulary (0..{vocab - 1}) or None, got {eos!r}")


def _one_per_sequence(scorer, choose: Callable[[Tensor], Tensor], max_new_tokens: int, eos: int | None,
                      return_attention: bool) -> list[Hypothesis]:
    """Decode one hypothesis per input sequence, picking each next token with ``choose``."""
    _check_steps(max_new_tokens)
    log_probs = scorer.start()  # (B, V)
    _check_eos(eos, log_probs.size(-1))
    device = log_probs.device
    group = torch.arange(log_probs.size(0), device=device)  # (n,) input sequence of each live row
    history = torch.empty(log_probs.size(0), 0, dtype=torch.long, device=device)  # (n, t)
    history_lp = log_probs.new_empty(log_probs.size(0), 0)  # (n, t)
    results: list[Hypothesis | None] = [None] * log_probs.size(0)
    for step in range(max_new_tokens):
        token = choose(log_probs)  # (n,)
        history = torch.cat([history, token[:, None]], dim=1)  # (n, t + 1)
        history_lp = torch.cat([history_lp, log_probs.gather(1, token[:, None])], dim=1)
        ended = token == eos if eos is not None else torch.zeros_like(token, dtype=torch.bool)
        stop = ended | (step == max_new_tokens - 1)
        for row in stop.nonzero()[:, 0].tolist():
            results[int(group[row])] = Hypothesis(
                history[row], history_lp[row], float(history_lp[row].sum()), bool(ended[row]),
                scorer.attention(row) if return_attention else None)
        keep = (~stop).nonzero()[:, 0]  # (n',)
        if keep.numel() == 0:
            break
        history, history_lp, group = history[keep], history_lp[keep], group[keep]
        log_probs = scorer.extend(keep, token[keep])
    return results


def greedy(scorer, *, max_new_tokens: int, eos: int | None = None, return_attention: bool = False) -> list[Hypothesis]:
    """Greedy decoding: the most probable token at every step, for every input sequence.

    A sequence stops at ``eos`` (which is kept) or after ``max_new_tokens`` tokens;
    stopped sequences no longer grow.  Returns one :class:`Hypothesis` per input sequence.
    """
    return _one_per_sequence(scorer, lambda log_probs: log_probs.argmax(dim=-1), max_new_tokens, eos,
                             return_attention)


def sample(scorer, *, max_new_tokens: int, eos: int | None = None, temperature: float = 1.0,
           top_k: int | None = None, generator: torch.Generator | None = None,
           return_attention: bool = False) -> list[Hypothesis]:
    r"""Ancestral sampling from :math:`\operatorname{softmax}(\log p / \tau)` restricted to the ``top_k`` tokens.

    Args:
        temperature: :math:`\tau > 0`; below 1 sharpens, above 1 flattens the distribution.
        top_k: sample among the ``top_k`` most probable tokens only (``None``: all).
        generator: a seeded ``torch.Generator`` (on the CPU) makes the draws reproducible.

    The returned ``token_log_probs`` are the model's, without temperature or truncation.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use greedy() for the argmax")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")

    def choose(log_probs: Tensor) -> Tensor:
        scores = log_probs / temperature  # (n, V)
        if top_k is not None and top_k < scores.size(-1):
            threshold = scores.topk(top_k, dim=-1).values[:, -1:]  # (n, 1)
            scores = scores.masked_fill(scores < threshold, float("-inf"))
        probs = torch.softmax(scores.double(), dim=-1).cpu()  # (n, V)
        return torch.multinomial(probs, 1, generator=generator)[:, 0].to(log_probs.device)

    return _one_per_sequence(scorer, choose, max_new_tokens, eos, return_attention)


class Beams:
    """The live hypotheses of a beam search over a ragged batch of input sequences, shared by
    :func:`beam_search` and :func:`~.hf_beam.hf_beam_search` (which differ only in how they score,
    file and stop).

    Live row ``r`` is a hypothesis of input sequence ``pair[r]`` (rows grouped by sequence, best
    first) with log-probability ``score[r]``, tokens ``history[r]`` and their log-probabilities
    ``history_lp[r]``; ``log_probs[r]`` are its next-token log-probabilities.  ``finished[b]`` holds
    the finished hypotheses of sequence ``b``.
    """

    def __init__(self, scorer, *, max_new_tokens: int, beam_size: int, eos: int | None) -> None:
        _check_steps(max_new_tokens)
        if not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")
        self.scorer = scorer
        self.log_probs = scorer.start()  # (B, V)
        self.num_sequences, self.vocab = self.log_probs.shape
        _check_eos(eos, self.vocab)
        device = self.log_probs.device
        self.pair = torch.arange(self.num_sequences, device=device)  # (n,) input sequence of each live row, sorted
        self.score = self.log_probs.new_zeros(self.num_sequences)  # (n,) log P of each live hypothesis
        self.history = torch.empty(self.num_sequences, 0, dtype=torch.long, device=device)  # (n, t)
        self.history_lp = self.log_probs.new_empty(self.num_sequences, 0)  # (n, t)
        self.finished: list[list[Hypothesis]] = [[] for _ in range(self.num_sequences)]

    def candidates(self, count: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The ``count`` best continuations of each sequence's live hypotheses by log P:
        ``(active (P,) sequences, score (P, c), live row (P, c), token (P, c))``, best first."""
        active = self.pair.unique_consecutive()  # (P,)
        width = self.pair.numel() // active.numel()  # 1 at the first step, beam_size after
        total = (self.score[:, None] + self.log_probs).reshape(active.numel(), width * self.vocab)  # (P, width V)
        top_score, top = total.topk(min(count, width * self.vocab), dim=1)  # (P, c)
        row = torch.arange(active.numel(), device=top.device)[:, None] * width + top // self.vocab
        return active, top_score, row, top % self.vocab

    def hypothesis(self, row: int, token: int, score: float, finished: bool, return_attention: bool) -> Hypothesis:
        """Live hypothesis ``row`` followed by ``token``, scored ``score``."""
        return Hypothesis(torch.cat([self.history[row], self.history.new_tensor([token])]),
                          torch.cat([self.history_lp[row], self.log_probs[row, token: token + 1]]), score, finished,
                          self.scorer.attention(row) if return_attention else None)

    def advance(self, keep: Tensor, active: Tensor, top_score: Tensor, row: Tensor, token: Tensor) -> bool:
        """Go on with the candidates ``keep`` marks (P, c); ``False`` (and nothing changes) when none is kept."""
        if not bool(keep.any()):
            return False
        parent, new_token = row[keep], token[keep]  # (n',), grouped by pair, best first
        self.history = torch.cat([self.history[parent], new_token[:, None]], dim=1)
        self.history_lp = torch.cat([self.history_lp[parent], self.log_probs[parent, new_token][:, None]], dim=1)
        self.score, self.pair = top_score[keep], active[:, None].expand_as(token)[keep]
        self.log_probs = self.scorer.extend(parent, new_token)
        return True


def beam_search(scorer, *, max_new_tokens: int, beam_size: int = 4, eos: int | None = None,
                length_penalty: float = 0.6, return_attention: bool = False) -> list[Hypothesis]:
    """Beam search with ``beam_size`` hypotheses per input sequence (see the module docs).

    Returns the best finished :class:`Hypothesis` of every input sequence; its ``score`` is
    the length-normalised log-probability.
    """
    beams = Beams(scorer, max_new_tokens=max_new_tokens, beam_size=beam_size, eos=eos)
    if beam_size >= beams.vocab:
        raise ValueError(f"beam_size ({beam_size}) must be smaller than the vocabulary ({beams.vocab} tokens)")
    device = beams.log_probs.device
    for step in range(max_new_tokens):
        active, top_score, row, token = beams.candidates(2 * beam_size)
        ended = token == eos if eos is not None else torch.zeros_like(token, dtype=torch.bool)
        keep = ~ended & ((~ended).cumsum(dim=1) <= beam_size)  # the K best that go on
        last = step == max_new_tokens - 1
        rank = torch.arange(token.size(1), device=device)
        for p, j in ((ended & (rank < beam_size)) | (keep & last)).nonzero().tolist():
            beams.finished[int(active[p])].append(beams.hypothesis(
                int(row[p, j]), int(token[p, j]),
                float(top_score[p, j]) / length_penalty_factor(step + 1, length_penalty), bool(ended[p, j]),
                return_attention))
        best_lp = max(length_penalty_factor(step + 2, length_penalty),
                      length_penalty_factor(max_new_tokens, length_penalty))
        reachable = torch.where(keep, top_score, float("-inf")).max(dim=1).values / best_lp  # (P,)
        finished = beams.finished
        done = torch.tensor([last or (bool(finished[g]) and max(h.score for h in finished[g]) >= float(bound))
                             for g, bound in zip(active.tolist(), reachable)], device=device)
        if not beams.advance(keep & ~done[:, None], active, top_score, row, token):
            break
    return [max(hypotheses, key=lambda h: h.score) for hypotheses in beams.finished]
