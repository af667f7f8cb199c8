r"""Token graphs: the edge sets on which attention passes messages (the bottom of the library).

Every token is a node and "token i may attend to token j" is an edge ``j -> i``::

    edge_index[0] = source j  (the key / value side)
    edge_index[1] = target i  (the query side)

Batches are disjoint unions: the tokens of all sequences are numbered consecutively in batch
order, so a ragged batch needs no padding.  The modules:

* :mod:`~gnn_transformer.graphs.builders` -- the paper's three graphs (:func:`complete`,
  :func:`causal`, :func:`bipartite`) and the lengths/positions/padding helpers;
* :mod:`~gnn_transformer.graphs.masks` -- torch masks <-> edges and per-edge biases: a bool
  mask says ``True`` = *blocked*, an edge says *allowed*; a float mask's ``-inf`` entries are
  absent edges and its finite entries per-edge biases;
* :mod:`~gnn_transformer.graphs.batching` -- sequences and seq2seq pairs as PyG ``Data`` /
  ``HeteroData``, collated by PyG into disjoint-union batches;
* :mod:`~gnn_transformer.graphs.patterns` -- sparse attention patterns (window, dilated,
  BigBird, star, image grids, user graphs), their registry by name, and
  :class:`SequenceGraph`, the graph a single-stack model attends over (one of its parts);
* :mod:`~gnn_transformer.graphs.distances` -- adjacency matrices and hop distances.

Nothing here imports the model: graphs are plain edge tensors.
"""
from . import batching, builders, masks, patterns
from .batching import seq2seq_batch, seq2seq_data, sequence_data
from .builders import *  # noqa: F401,F403 -- the builders list their names in __all__
from .builders import __all__ as _builders
from .masks import edges_from_mask, edges_to_mask
from .patterns import SequenceGraph, sequence_graph

__all__ = [*_builders, "edges_from_mask", "edges_to_mask", "sequence_data", "seq2seq_data", "seq2seq_batch",
           "builders", "masks", "batching", "patterns", "SequenceGraph", "sequence_graph"]
