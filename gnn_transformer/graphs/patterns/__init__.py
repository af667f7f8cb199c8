r"""Sparse attention patterns as graph builders.

"Efficient Transformers: A Survey" (arXiv:2009.06732) lists fixed, learned and random
patterns that restrict which keys a query sees.  In the graph view each pattern is just
another edge set; the same attention, layers, stacks and models run on all of them.

Conventions (those of :mod:`gnn_transformer.graphs`): lengths of a ragged batch in, an
``edge_index`` (2, num_edges) out, ``edge_index[0]`` the key j and ``edge_index[1]`` the
query i, sorted by target then source, sequences as a disjoint union (no padding);
``causal=True`` keeps :math:`p_j \le p_i`.

=====================  ====================================  ===========================
builder                 pattern                               edges per query
=====================  ====================================  ===========================
``sliding_window``      :math:`|p_i - p_j| \le r`             :math:`2r + 1`
``dilated_window``      :math:`p_j = p_i + k d, |k| \le r`    :math:`2r + 1`
``global_tokens``       window + first ``g`` tokens global    :math:`2r + 1 + g` (globals: n)
``bigbird``             window + global + random keys         :math:`2r + 1 + g + k`
``block_local``         same block of ``b`` tokens            :math:`b`
``strided``             Sparse Transformer, stride ``l``      :math:`2l + 1 + n / l`
``star``                Star-Transformer ring + relay         4 (relay: n + 1)
``grid_rows`` etc.      DALL-E row / column / window          :math:`w`, :math:`h`, :math:`k^2`
``chain``               recurrent layer                       2
``convolution``         (dilated) convolution                 ``kernel_size``
``from_networkx``       any user graph                        --
=====================  ====================================  ===========================

Stacks and models take one edge set for all layers or a list with one per layer
(for example ``[strided(lengths, 4, part="local"), strided(lengths, 4, part="strided")] * 3``).

:mod:`~gnn_transformer.graphs.patterns.registry` holds them all by name with their options
(:data:`PATTERNS`, :func:`build_pattern`), for the command line and the explorer, and turns
one into a model's graph part (:func:`sequence_graph`, :class:`SequenceGraph`).
"""
from . import grid, registry, sequence, user
from ._build import restrict_causal, union
from .grid import *  # noqa: F401,F403 -- each module lists its builders in __all__
from .sequence import *  # noqa: F401,F403
from .user import *  # noqa: F401,F403
from .registry import (OPTIONS, PATTERNS, Option, Pattern, PatternSpec, SequenceGraph, as_sequence_graph,
                       build_pattern, pattern_options, pattern_spec, sequence_graph)

__all__ = [*sequence.__all__, *grid.__all__, *user.__all__, "union", "restrict_causal", *registry.__all__]
