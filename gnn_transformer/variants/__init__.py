r"""Variants of the Transformer built on the core: every one is per node or per edge.

* :mod:`~gnn_transformer.variants.models` -- the options papers compare (norms, gated
  feed-forwards, learned and rotary positions, ALiBi and T5 biases, tying) and
  :class:`GraphVariantModel` that puts them together;
* :mod:`~gnn_transformer.variants.biases` -- relative position biases as edge features
  (T5 buckets, ALiBi, graph distances);
* :mod:`~gnn_transformer.variants.linear_attention` -- kernelised attention on the causal
  graph, equal to its recurrent form;
* :mod:`~gnn_transformer.variants.switch` -- Switch routing: tokens to experts as a bipartite graph;
* :mod:`~gnn_transformer.variants.universal` -- the Universal Transformer: one layer's weights over
  T steps, with adaptive computation time per node (:mod:`~gnn_transformer.variants.act`).
"""
from . import act, biases, linear_attention, models, switch, universal
from .models import *  # noqa: F401,F403 -- the variants' public names
from .models import __all__ as _models

from .universal import GraphUniversalTransformer

__all__ = [*_models, "GraphUniversalTransformer", "act", "biases", "linear_attention", "models", "switch",
           "universal"]
