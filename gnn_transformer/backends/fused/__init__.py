"""GPU kernels of the ``"fused"`` attention backend (Triton).

Importing this package imports Triton and defines the kernels; :mod:`gnn_transformer`
imports it only when the fused backend is first used.  Triton reads ``TRITON_INTERPRET``
when the kernels are defined: set ``TRITON_INTERPRET=1`` before the first import to run
them on CPU tensors through Triton's interpreter (slow; how the tests run without a GPU).
"""
from .launch import INTERPRETED, fused_graph_attention

__all__ = ["fused_graph_attention", "INTERPRETED"]
