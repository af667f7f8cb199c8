r"""Sparse attention patterns over token sequences ("Efficient Transformers: A Survey", arXiv:2009.06732).

Each builder takes the sequence lengths of a ragged batch and returns an ``edge_index``
(2, num_edges) for the disjoint union of the sequences, sorted by target then source, with
``edge_index[0]`` the key (source) and ``edge_index[1]`` the query (target), exactly like
:func:`gnn_transformer.graphs.complete`.  ``causal=True`` keeps only edges from a key at or
before its query (:math:`p_j \le p_i`).  Positions are relative to each sequence.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..builders import LengthsLike, _contiguous_ranges, lengths_to_ptr
from ._build import Layout, check_positive, coalesce, from_offsets, random_keys, restrict_causal

__all__ = [
    "sliding_window",
    "dilated_window",
    "global_tokens",
    "bigbird",
    "block_local",
    "strided",
    "star",
    "star_lengths",
    "chain",
    "convolution",
]


def _check_radius(radius: int) -> int:
    return check_positive(radius, "radius", minimum=0)


def sliding_window(lengths: LengthsLike, radius: int, causal: bool = False) -> Tensor:
    r"""Local attention: :math:`j \to i` for :math:`|p_i - p_j| \le r` (Longformer's sliding window).

    Each query sees at most :math:`2r + 1` keys (:math:`r + 1` when causal), so a layer
    costs :math:`O(n r)` instead of :math:`O(n^2)`, and information needs
    :math:`\lceil (n - 1) / r \rceil` layers to cross a sequence.

    Example::

        >>> sliding_window([4], radius=1)
        tensor([[0, 1, 0, 1, 2, 1, 2, 3, 2, 3],
                [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]])
    """
    _check_radius(radius)
    layout = Layout.of(lengths)
    start = layout.ptr[layout.batch]  # (N,)
    first = (layout.position - radius).clamp(min=0)  # (N,)
    last = layout.position if causal else torch.minimum(layout.position + radius, layout.length - 1)
    return _contiguous_ranges(start + first, last - first + 1)


def dilated_window(lengths: LengthsLike, radius: int, dilation: int, causal: bool = False) -> Tensor:
    r"""Dilated sliding window: :math:`j \to i` for :math:`p_j = p_i + k d`, :math:`|k| \le r`.

    Longformer's dilated window (arXiv:2004.05150, section 3.1): the same :math:`2r + 1` keys
    per query as :func:`sliding_window`, spread ``dilation`` apart, so the reach grows to
    :math:`r d` without extra cost.
    """
    _check_radius(radius)
    check_positive(dilation, "dilation")
    layout = Layout.of(lengths)
    offsets = torch.arange(-radius, radius + 1, device=layout.lengths.device) * dilation
    return from_offsets(layout, offsets, causal)


def _first_tokens(layout: Layout, num_global: int) -> tuple[Tensor, Tensor]:
    """Node ids of the first ``num_global`` tokens of every sequence, and their sequence: (G,), (G,)."""
    count = layout.lengths.clamp(max=num_global)  # (B,)
    edges = _contiguous_ranges(layout.ptr[:-1], count)  # row 0: the nodes, row 1: their sequence
    return edges[0], edges[1]


def global_tokens(lengths: LengthsLike, num_global: int = 1, radius: int = 0, causal: bool = False) -> Tensor:
    r"""Longformer's global attention on top of a sliding window (arXiv:2004.05150, section 3.1).

    The first ``num_global`` tokens of each sequence (a [CLS] token, a question) are *global*:
    they attend to every token of their sequence and every token attends to them, in both
    directions.  Every other pair follows :func:`sliding_window` of radius ``radius``
    (``radius=0``: self-loops only).  Any two tokens are at most 2 hops apart.
    """
    check_positive(num_global, "num_global", minimum=0)
    layout = Layout.of(lengths)
    global_node, global_batch = _first_tokens(layout, num_global)
    lengths_of_global = layout.lengths[global_batch]
    # every token of the sequence -> each global token
    to_global = _contiguous_ranges(layout.ptr[global_batch], lengths_of_global)  # row 1 indexes global_node
    to_global[1] = global_node[to_global[1]]
    # each global token -> every token of the sequence
    from_global = torch.stack([to_global[1], to_global[0]])
    edges = torch.cat([sliding_window(layout.lengths, radius), to_global, from_global], dim=1)
    edges = coalesce(edges, layout.num_nodes)
    return restrict_causal(edges, layout.position) if causal else edges


def bigbird(lengths: LengthsLike, radius: int = 1, num_global: int = 1, num_random: int = 2, seed: int = 0,
            causal: bool = False) -> Tensor:
    r"""BigBird (arXiv:2007.14062): sliding window + global tokens + random keys.

    The union of :func:`global_tokens` (``num_global`` first tokens, window ``radius``) and,
    for every query, ``num_random`` distinct keys drawn uniformly from its sequence (from
    the keys at or before it when ``causal``).  The draws depend only on ``seed``, on every
    device.  ``radius=0, num_global=0`` gives a purely random graph (plus self-loops).
    BigBird draws at the level of blocks of tokens; this is the token-level graph.
    """
    check_positive(num_random, "num_random", minimum=0)
    layout = Layout.of(lengths)
    keys = random_keys(layout, num_random, seed, causal)  # (N, num_random)
    target, slot = (keys >= 0).nonzero(as_tuple=True)
    random_edges = torch.stack([keys[target, slot], target])
    edges = torch.cat([global_tokens(layout.lengths, num_global, radius, causal), random_edges], dim=1)
    return coalesce(edges, layout.num_nodes)


def block_local(lengths: LengthsLike, block_size: int, causal: bool = False) -> Tensor:
    r"""Blockwise (chunked) attention: :math:`j \to i` when :math:`\lfloor p_j / b \rfloor = \lfloor p_i / b \rfloor`.

    Each sequence is cut into blocks of ``block_size`` tokens (the last may be shorter) and
    attention stays inside a block (Blockwise / Local attention of the survey).  No
    information crosses a block boundary, however many layers are stacked.
    """
    check_positive(block_size, "block_size")
    layout = Layout.of(lengths)
    block_start = layout.position - layout.position % block_size  # (N,)
    block_end = torch.minimum(block_start + block_size, layout.length)  # (N,) exclusive
    count = (layout.position + 1 - block_start) if causal else (block_end - block_start)
    return _contiguous_ranges(layout.ptr[layout.batch] + block_start, count)


def strided(lengths: LengthsLike, stride: int, part: str = "both", causal: bool = False) -> Tensor:
    r"""The strided pattern of the Sparse Transformer (arXiv:1904.10509, section 4.2).

    With stride :math:`l` (about :math:`\sqrt n`), the *local* part links
    :math:`|p_i - p_j| \le l` and the *strided* part links :math:`(p_i - p_j) \bmod l = 0`.
    The paper is autoregressive (``causal=True``: :math:`A^{(1)}_i = \{i - l, \dots, i\}`,
    :math:`A^{(2)}_i = \{j \le i : (i - j) \bmod l = 0\}`) and splits the two parts over
    heads or over alternating layers: pass ``part="local"`` and ``part="strided"`` as the
    per-layer edge sets of a stack to factorise, or ``part="both"`` for their union.
    Every token reaches every other in two layers.
    """
    check_positive(stride, "stride")
    parts = ("both", "local", "strided")
    if part not in parts:
        raise ValueError(f"part must be one of {parts}, got {part!r}")
    layout = Layout.of(lengths)
    edges = []
    if part in ("both", "local"):
        edges.append(sliding_window(layout.lengths, stride, causal))
    if part in ("both", "strided"):
        reach = -(-int(layout.lengths.max()) // stride) if layout.num_nodes else 0
        offsets = torch.arange(-reach, reach + 1, device=layout.lengths.device) * stride
        edges.append(from_offsets(layout, offsets, causal))
    return coalesce(torch.cat(edges, dim=1), layout.num_nodes)


def star(lengths: LengthsLike, causal: bool = False) -> Tensor:
    r"""Star-Transformer (arXiv:1902.09113): a ring of satellites around one relay node per sequence.

    **Node numbering.**  A sequence of :math:`L` tokens becomes :math:`L + 1` nodes: its
    satellites (the tokens) at positions :math:`0 .. L-1`, then its *relay* node at position
    :math:`L`, so sequence :math:`b` occupies nodes ``ptr[b] .. ptr[b] + L_b`` with
    ``ptr = lengths_to_ptr(lengths + 1)``.  Build the node features by appending one relay
    feature after each sequence (for example a learned vector); :func:`star_lengths` gives
    the node counts.

    Satellite :math:`i` attends to its neighbours :math:`i - 1, i, i + 1` and to the relay;
    the relay attends to every satellite and to itself.  Any two tokens are 2 hops apart
    with :math:`O(n)` edges.  ``causal`` drops the edges whose key comes after the query,
    which cuts the relay off from the satellites.
    """
    layout = Layout.of(lengths)
    node_ptr = lengths_to_ptr(layout.lengths + 1)  # (B + 1,) first node of each star
    ring = sliding_window(layout.lengths, 1)
    ring = ring + layout.batch[ring]  # token ids -> node ids (one relay before each later sequence)
    satellite = torch.arange(layout.num_nodes, device=layout.lengths.device) + layout.batch  # (N,)
    relay = (node_ptr[1:] - 1)[layout.batch]  # (N,) the relay of each satellite's star
    to_relay = torch.stack([satellite, relay])
    from_relay = torch.stack([relay, satellite])
    relay_self = (node_ptr[1:] - 1).expand(2, -1)
    num_nodes = int(node_ptr[-1])
    edges = coalesce(torch.cat([ring, to_relay, from_relay, relay_self], dim=1), num_nodes)
    if causal:
        node_position = torch.arange(num_nodes, device=edges.device) - node_ptr[:-1].repeat_interleave(
            layout.lengths + 1)
        edges = restrict_causal(edges, node_position)
    return edges


def star_lengths(lengths: LengthsLike) -> Tensor:
    """Nodes per sequence of a :func:`star` graph: every length plus one relay node."""
    return Layout.of(lengths).lengths + 1


def chain(lengths: LengthsLike) -> Tensor:
    r"""The recurrent layer's graph: :math:`(i - 1) \to i` and :math:`i \to i`.

    A recurrent network reads its previous state and its own input; stacked as a graph
    its path between the first and the last token has :math:`n - 1` edges.
    """
    layout = Layout.of(lengths)
    return from_offsets(layout, torch.tensor([-1, 0], device=layout.lengths.device))


def convolution(lengths: LengthsLike, kernel_size: int, dilation: int = 1, causal: bool = True) -> Tensor:
    r"""A convolution's graph: token :math:`i` reads the ``kernel_size`` tokens of its kernel.

    Causal (the default; WaveNet, ByteNet's decoder): keys :math:`p_i - t d`,
    :math:`t = 0 .. k - 1`.  Centred (``causal=False``, odd ``kernel_size``): keys
    :math:`p_i + t d`, :math:`|t| \le (k - 1) / 2`.  Stacking layers with dilations
    :math:`1, k, k^2, \dots` reaches :math:`k^m` tokens in :math:`m` layers (the
    :math:`O(\log_k n)` path of the paper's Table 1).
    """
    check_positive(kernel_size, "kernel_size")
    check_positive(dilation, "dilation")
    layout = Layout.of(lengths)
    if causal:
        offsets = -torch.arange(kernel_size - 1, -1, -1) * dilation
    else:
        if kernel_size % 2 == 0:
            raise ValueError(f"a centred convolution needs an odd kernel_size, got {kernel_size}; "
                             f"use causal=True for even kernels")
        half = kernel_size // 2
        offsets = torch.arange(-half, half + 1) * dilation
    return from_offsets(layout, offsets.to(layout.lengths.device))
