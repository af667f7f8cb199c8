r"""Decoding as graph growth: greedy, sampling and beam search for the graph models.

"The decoder is also composed of a stack of N = 6 identical layers ... This masking,
combined with fact that the output embeddings are offset by one position, ensures that
the predictions for position i can depend only on the known outputs at positions less
than i" (arXiv:1706.03762, section 3.1).  In the graph view a decoding step adds one
node per hypothesis, its causal edges (from the nodes of its prefix) and its
cross-attention edges (from its source tokens); only the new nodes' messages are
computed, and the keys and values of all older nodes come from a per-layer cache.

Example::

    >>> import torch
    >>> from gnn_transformer import GraphTransformerModel
    >>> from gnn_transformer.generation import generate
    >>> model = GraphTransformerModel(20, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1).eval()
    >>> out = generate(model, [torch.tensor([3, 4, 5])], strategy="beam", bos=0, eos=None,
    ...                max_new_tokens=10, return_attention=True)   # eos=1 would stop at token 1
    >>> out[0].tokens.shape, type(out[0].score)    # 10 tokens (no end token given); s(Y)
    (torch.Size([10]), <class 'float'>)
    >>> out[0].attention[-1]["cross"].matrix().shape     # (H, T, S): the last layer's alignment
    torch.Size([2, 10, 3])

Modules: :mod:`.growth` (the incremental prefix-tree graphs), :mod:`.recompute` (whole
graph every step, the reference), :mod:`.search` (the strategies).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from torch import Tensor

from .arguments import check_generate_arguments
from .growth import AttentionGraph, GrowingCausalGraph, GrowingGraph, GrowingSeq2SeqGraph
from .hf_beam import hf_beam_search
from .recompute import PrefixScorer, RecomputedCausalGraph, RecomputedGraph, RecomputedSeq2SeqGraph
from .search import Hypothesis, beam_search, greedy, length_penalty_factor, sample

__all__ = [
    "generate",
    "decoding_graph",
    "greedy",
    "sample",
    "beam_search",
    "hf_beam_search",
    "length_penalty_factor",
    "Hypothesis",
    "AttentionGraph",
    "GrowingGraph",
    "RecomputedGraph",
    "GrowingSeq2SeqGraph",
    "GrowingCausalGraph",
    "RecomputedSeq2SeqGraph",
    "RecomputedCausalGraph",
    "PrefixScorer",
]


def decoding_graph(model, inputs: Sequence[Tensor], *, bos: int | None = None, recompute: bool = False,
                   record_attention: bool = False, attention_window: int | None = None):
    """The scorer that decodes ``model`` on ``inputs`` (sources of an encoder-decoder model,
    prompts of a decoder-only one): the growing graph, or with ``recompute`` the whole graph
    of every prefix anew.  The model is asked only through :mod:`gnn_transformer.core.interface`.
    ``attention_window`` (decoder-only models) limits each node's edges to the last
    ``attention_window`` tokens, as ``graphs.causal(lengths, window)``."""
    if recompute:
        return RecomputedGraph(model, inputs, bos, attention_window)
    return GrowingGraph(model, inputs, bos, record_attention, attention_window)


@contextmanager
def evaluating(model):
    """Eval mode and no autograd for the duration; the previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def generate(model, inputs: Sequence[Tensor], *, strategy: str = "greedy", max_new_tokens: int,
             bos: int | None = None, eos: int | None = None, beam_size: int = 4, length_penalty: float = 0.6,
             temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None,
             return_attention: bool = False, recompute: bool = False,
             attention_window: int | None = None, beam_scoring: str = "paper",
             early_stopping: bool | str = False) -> list[Hypothesis]:
    """Decode every input sequence with ``strategy`` ``"greedy"``, ``"beam"`` or ``"sample"``.

    Args:
        model: any model implementing :mod:`gnn_transformer.core.interface`: an encoder-decoder
            model (``inputs`` are source sequences, ``bos`` starts each target; Hugging Face
            imports default to ``config.decoder_start_token_id``) or a decoder-only one on a
            causal graph (``inputs`` are prompts): the paper's model, ``GraphDecoderModel``,
            ``GraphVariantModel``, the GPT-2, BART and T5 imports.  Run in eval mode without
            autograd; its mode is restored.
        inputs: a ragged batch: one 1-D tensor of token ids per sequence.
        max_new_tokens: at most this many generated tokens per sequence.
        eos: the end token (kept in the output); ``None`` decodes ``max_new_tokens`` tokens.
        beam_size, length_penalty: for ``"beam"`` (see :func:`beam_search`).
        beam_scoring: ``"paper"`` (:func:`beam_search`: Wu et al.'s length penalty, stop when no live
            hypothesis can win) or ``"hf"`` (:func:`hf_beam_search`: Hugging Face ``generate``'s
            :math:`\\log P / |Y|^\\alpha` and its ``early_stopping``; pass ``length_penalty=1.0`` for its default).
        early_stopping: with ``beam_scoring="hf"``, Hugging Face's ``early_stopping`` (True, False, ``"never"``).
        temperature, top_k, generator: for ``"sample"`` (see :func:`sample`).
        return_attention: attach every layer's per-step attention to each hypothesis.
        recompute: recompute the whole graph at every step instead of growing it (the
            reference path; same tokens, slower, no attention).
        attention_window: decoder-only models trained on sliding-window causal graphs: each
            new node gets edges from the last ``attention_window`` tokens only.

    Returns:
        one :class:`Hypothesis` per input sequence.
    """
    check_generate_arguments(inputs, strategy=strategy, max_new_tokens=max_new_tokens, bos=bos, eos=eos,
                             beam_size=beam_size, length_penalty=length_penalty, temperature=temperature, top_k=top_k,
                             attention_window=attention_window, beam_scoring=beam_scoring,
                             early_stopping=early_stopping)
    with evaluating(model):
        scorer = decoding_graph(model, inputs, bos=bos, recompute=recompute, record_attention=return_attention,
                                attention_window=attention_window)
        common = dict(max_new_tokens=max_new_tokens, eos=eos, return_attention=return_attention)
        if strategy == "greedy":
            return greedy(scorer, **common)
        if strategy == "beam" and beam_scoring == "hf":
            return hf_beam_search(scorer, beam_size=beam_size, length_penalty=length_penalty,
                                  early_stopping=early_stopping, **common)
        if strategy == "beam":
            return beam_search(scorer, beam_size=beam_size, length_penalty=length_penalty, **common)
        return sample(scorer, temperature=temperature, top_k=top_k, generator=generator, **common)
