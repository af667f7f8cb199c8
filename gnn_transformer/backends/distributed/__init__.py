r"""Attention on a token graph whose nodes are split across processes (``torch.distributed``).

A rank needs the keys and values of the remote sources its edges reference: the
communication of one attention layer is the graph's edge cut.  Three exact strategies move
them (:mod:`.strategies`): **halo** exchange (exactly the cut, any graph), **ring** (all
blocks circulate, blocks without edges are not computed; best when the cut is most of the
graph: complete graphs), **head**-parallel (Ulysses: node shards <-> head shards).

Usage, on every rank (the same global graph everywhere)::

    graph = DistributedGraph(edge_index, num_nodes)           # contiguous ranges by default
    mine = graph.targets.nodes(rank)                          # this rank's nodes
    out = distributed_graph_attention(q[mine], k[mine], v[mine], graph, strategy="halo")
    graph.traffic.forward, graph.predicted_bytes("halo", H, C)  # bytes sent, measured and predicted

With one rank (or no initialised process group) the call is the local backend on the whole
graph.  Inputs are checked here; the plan is built once per graph and trusted after.
"""
from .comm import Traffic
from .partition import Partition, contiguous_partition, cut_rows
from .plan import STRATEGIES, DistributedGraph
from .strategies import distributed_graph_attention

__all__ = ["DistributedGraph", "Partition", "contiguous_partition", "distributed_graph_attention", "Traffic",
           "STRATEGIES", "cut_rows"]
