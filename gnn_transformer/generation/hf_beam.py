r"""Beam search with Hugging Face ``generate``'s conventions, over the same scorers as :mod:`.search`.

Hugging Face scores a finished hypothesis of :math:`|Y|` generated tokens (the end token included) as

.. math::

    s(Y) = \frac{\log P(Y \mid X)}{|Y|^{\alpha}}

(``length_penalty`` :math:`\alpha`, 1 by default; the paper's search, :func:`~.search.beam_search`,
uses Wu et al.'s :math:`((5 + |Y|)/6)^\alpha`), and runs every step as follows, per input sequence:

1. the ``2 K`` best continuations of the ``K`` live hypotheses by :math:`\log P` (at the first step,
   of the one start hypothesis);
2. a continuation *stops* when its token is ``eos`` or it reaches ``max_new_tokens``;
3. the ``K`` best continuations that do not stop are the next live hypotheses;
4. stopped continuations among the first ``K`` of step 1 join a list of at most ``K`` finished
   hypotheses (the ``K`` best by :math:`s` are kept), unless the list is closed;
5. the list closes when it is full and ``early_stopping=True``, or when it is full and the best
   live hypothesis cannot beat its worst member by the estimate
   :math:`\log P_\text{best live} / t^{\alpha}` (``t`` tokens generated so far; with
   ``early_stopping="never"`` and :math:`\alpha > 0`, :math:`t` is ``max_new_tokens``).

The answer is the best finished hypothesis.  This module follows
``transformers.GenerationMixin._beam_search`` step for step (in the scorer's precision; Hugging
Face accumulates scores in float32), so the same model decodes the same tokens here and there.
"""
from __future__ import annotations

import torch

from .arguments import EARLY_STOPPING, check_early_stopping
from .search import Beams, Hypothesis

__all__ = ["hf_beam_search", "EARLY_STOPPING"]


def hf_beam_search(scorer, *, max_new_tokens: int, beam_size: int = 4, eos: int | None = None,
                   length_penalty: float = 1.0, early_stopping: bool | str = False,
                   return_attention: bool = False) -> list[Hypothesis]:
    """Beam search as Hugging Face ``generate(num_beams=beam_size, length_penalty=, early_stopping=)``
    (see the module docs).  Returns the best finished :class:`Hypothesis` of every input sequence,
    its ``score`` being :math:`\\log P / |Y|^\\alpha`."""
    check_early_stopping(early_stopping)
    beams = Beams(scorer, max_new_tokens=max_new_tokens, beam_size=beam_size, eos=eos)
    if 2 * beam_size > beams.vocab:
        raise ValueError(f"beam_size ({beam_size}) keeps 2 * beam_size candidates, more than the vocabulary "
                         f"({beams.vocab} tokens)")
    device = beams.log_probs.device
    for step in range(max_new_tokens):
        generated = step + 1
        active, top_score, row, token = beams.candidates(2 * beam_size)
        stops = token == eos if eos is not None else torch.zeros_like(token, dtype=torch.bool)
        if generated == max_new_tokens:
            stops = torch.ones_like(stops)
        keep = ~stops & ((~stops).cumsum(dim=1) <= beam_size)  # (P, 2K) the K best that go on
        rank = torch.arange(token.size(1), device=device)
        done = []
        for p, sequence in enumerate(active.tolist()):
            hypotheses = beams.finished[sequence]
            for j in (stops[p] & (rank < beam_size)).nonzero()[:, 0].tolist():
                t = int(token[p, j])
                hypotheses.append(beams.hypothesis(int(row[p, j]), t, float(top_score[p, j]) / generated ** length_penalty,
                                                   t == eos, return_attention))
                hypotheses.sort(key=lambda h: -h.score)
                del hypotheses[beam_size:]
            full = len(hypotheses) == beam_size
            if generated == max_new_tokens or (full and early_stopping is True):
                done.append(True)
                continue
            horizon = max_new_tokens if early_stopping == "never" and length_penalty > 0 else generated
            best_live = float(torch.where(keep[p], top_score[p], float("-inf")).max()) / horizon ** length_penalty
            done.append(full and best_live <= hypotheses[-1].score)
        if not beams.advance(keep & ~torch.tensor(done, device=device)[:, None], active, top_score, row, token):
            break
    return [hypotheses[0] for hypotheses in beams.finished]
