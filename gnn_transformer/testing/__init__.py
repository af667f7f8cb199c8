r"""Assertion helpers that make each equivalence property one line of a test.

Tolerance convention (per tensor):

.. math::

    \max |a_\text{graph} - a_\text{torch}| \le \text{tol} \cdot \max(1, \max |a_\text{torch}|)

with ``tol = 1e-10`` in float64 and ``1e-5`` in float32 (:func:`default_tolerance`).
Comparisons run torch inside :func:`torch_reference_mode` so that torch takes one
fixed, exact code path.
"""
from .backends import GraphCase, compare_backend, graph_cases
from .parity import (
    ParityReport,
    assert_matches_torch,
    assert_permutation_equivariant,
    compare_functions,
    compare_with_torch,
    default_tolerance,
    relative_difference,
    torch_reference_mode,
)
from .syncs import HostSyncs, count_host_syncs

__all__ = [
    "GraphCase",
    "HostSyncs",
    "ParityReport",
    "assert_matches_torch",
    "assert_permutation_equivariant",
    "compare_backend",
    "compare_functions",
    "compare_with_torch",
    "count_host_syncs",
    "default_tolerance",
    "graph_cases",
    "relative_difference",
    "torch_reference_mode",
]
