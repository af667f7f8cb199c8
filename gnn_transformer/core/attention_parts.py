r"""The parts of multi-head attention around its message passing.

* virtual source nodes: ``add_bias_kv`` appends a source with key ``bias_k`` and value
  ``bias_v``, ``add_zero_attn`` one with zero key and value, each with an edge (bias 0) into
  every target, after the real edges and in that order (:func:`with_virtual_sources`,
  :func:`with_virtual_edges`);
* :class:`KeyValueCache`: the growing node set of incremental decoding;
* :class:`AttentionTensors`: what an attention hook receives.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["with_virtual_sources", "with_virtual_edges", "KeyValueCache", "AttentionTensors"]


def with_virtual_sources(k: Tensor, v: Tensor, bias_k: Tensor | None, bias_v: Tensor | None,
                         add_zero_attn: bool) -> tuple[Tensor, Tensor]:
    """Keys and values (S, H, C) with the virtual sources appended: (S + V, H, C), V = 0, 1 or 2."""
    shape = (1, *k.shape[1:])
    if bias_k is not None:
        k = torch.cat([k, bias_k.reshape(shape)])  # (S + 1, H, C)
        v = torch.cat([v, bias_v.reshape(1, *v.shape[1:])])
    if add_zero_attn:
        k = torch.cat([k, k.new_zeros(shape)])
        v = torch.cat([v, v.new_zeros(1, *v.shape[1:])])
    return k, v


def with_virtual_edges(edge_index: Tensor, num_sources: int, num_targets: int, count: int) -> Tensor:
    """``edge_index`` (2, num_edges) plus an edge from each of ``count`` virtual sources (numbered
    ``num_sources ..``) into every target: (2, num_edges + count * T)."""
    targets = torch.arange(num_targets, device=edge_index.device)
    extra = [torch.stack([torch.full_like(targets, num_sources + slot), targets]) for slot in range(count)]
    return torch.cat([edge_index, *extra], dim=1) if extra else edge_index


@dataclass(frozen=True)
class AttentionTensors:
    r"""What an attention hook (:meth:`GraphMultiheadAttention.register_attention_hook`) receives.

    .. math::

        s_{ij} = \text{scale}\,\langle q_i, k_j \rangle + b_{ij}, \qquad
        \alpha_{ij} = \operatorname{softmax}_{j \to i}(s_{ij}), \qquad
        h_i = \sum_{j \to i} \alpha_{ij} v_j, \qquad
        \text{output}_i = \operatorname{concat}_h(h_i^h) W^O + b^O

    per head.  Virtual sources (``add_bias_kv``, ``add_zero_attn``) are rows S.. of ``key`` and
    ``value`` and their edges come after the real ones.

    Shapes:
        - query: (T, H, C); key: (S', H, C); value: (S', H, Cv) with S' = S + virtual sources.
        - edge_index: (2, num_edges), row 0 sources j, row 1 targets i.
        - edge_bias: (num_edges, H) or (num_edges, 1), or ``None``; scale: a float.
        - weights: (num_edges, H) (after dropout, as returned), or ``None`` where a fast backend
          was not asked for them.
        - aggregated: (T, H, Cv); output: (T, E).
    """

    query: Tensor
    key: Tensor
    value: Tensor
    edge_index: Tensor
    edge_bias: Tensor | None
    scale: float
    weights: Tensor | None
    aggregated: Tensor
    output: Tensor


class KeyValueCache:
    """Projected keys and values of the source nodes seen so far, for incremental decoding.

    In the graph view a key/value cache is the growing node set: each decoding step adds
    nodes, and their keys and values are computed once and kept.  A *static* cache (for
    cross-attention to the encoder's memory) is filled once and then only read.
    """

    def __init__(self, static: bool = False) -> None:
        self.static = static
        self.key: Tensor | None = None  # (S, H, C)
        self.value: Tensor | None = None  # (S, H, C)

    @property
    def filled(self) -> bool:
        return self.key is not None

    @property
    def num_sources(self) -> int:
        return 0 if self.key is None else self.key.size(0)

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Add the projections of new source nodes; returns all cached keys and values."""
        if self.key is None:
            self.key, self.value = key, value
        else:
            self.key, self.value = torch.cat([self.key, key]), torch.cat([self.value, value])
        return self.key, self.value
