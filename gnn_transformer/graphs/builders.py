r"""Graph builders: the edge sets on which attention passes messages.

Every token is a node and "token i may attend to token j" is an edge
``j -> i``.  Batches are *disjoint unions*: the tokens of all sequences are
numbered consecutively in batch order (sequence 0 first), so a ragged batch
needs no padding.

Edge convention (used everywhere in this library)::

    edge_index[0] = source j  (the key / value side)
    edge_index[1] = target i  (the query side)

Edges returned by the builders are sorted by target, then by source.

The three graphs of "Attention Is All You Need" (arXiv:1706.03762):

* :func:`complete` -- encoder self-attention: every ``j -> i`` within a sequence,
  self-loops included.  A sequence of length ``L`` has ``L^2`` edges.
* :func:`causal` -- decoder masked self-attention: ``j -> i`` for ``j <= i``,
  ``L (L + 1) / 2`` edges.
* :func:`bipartite` -- encoder-decoder (cross) attention: every source token of
  pair ``b`` to every target token of pair ``b``; row 0 of the result indexes
  source tokens, row 1 target tokens.
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "as_lengths",
    "lengths_to_ptr",
    "batch_vector",
    "positions",
    "complete",
    "causal",
    "bipartite",
    "padding_mask",
    "to_nodes",
    "to_padded",
    "num_edges",
]

LengthsLike = Tensor | Sequence[int]


def _integer(value) -> int | None:
    """``value`` as a Python int if it is an integer (Python, NumPy, or a 0-d integer tensor), else None.

    Bools are not lengths: ``True`` would silently count as 1.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, Tensor):
        is_integer = value.dim() == 0 and not (value.dtype.is_floating_point or value.is_complex()
                                                or value.dtype == torch.bool)
        return int(value) if is_integer else None
    try:
        return operator.index(value)  # int and NumPy integers; floats, strings and the rest refuse
    except TypeError:
        return None


def as_lengths(lengths: LengthsLike, name: str = "lengths", device=None) -> Tensor:
    """Validate sequence lengths and return them as a 1-D ``int64`` tensor.

    Accepted: a 1-D integer tensor or NumPy array, or a list/tuple of integers (Python, NumPy
    or 0-d integer tensors), one length per sequence.  Refused with an error naming ``name``:
    a single number (``complete(5)``: write ``complete([5])``), bools, floats, sets and
    mappings (no order), nested lists, negative lengths and an empty batch.
    """
    expected = "a 1-D integer tensor or a list of integers, one length per sequence"
    if type(lengths).__module__ == "numpy" and hasattr(lengths, "dtype"):
        lengths = torch.from_numpy(lengths) if type(lengths).__name__ == "ndarray" else lengths
    if isinstance(lengths, Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
            raise TypeError(f"{name} must hold integers, got a tensor of dtype {lengths.dtype}")
        if lengths.dim() != 1:
            hint = f": for one sequence of {int(lengths)} tokens pass [{int(lengths)}]" if lengths.dim() == 0 else ""
            raise ValueError(f"{name} must be 1-D (one length per sequence), got shape {tuple(lengths.shape)}{hint}")
        out = lengths.to(dtype=torch.long, device=device if device is not None else lengths.device)
    elif _integer(lengths) is not None:
        raise TypeError(f"{name} must be {expected}, got the single number {lengths!r}: for one sequence of "
                        f"{_integer(lengths)} tokens pass [{_integer(lengths)}]")
    elif not isinstance(lengths, (list, tuple, range)):
        raise TypeError(f"{name} must be {expected}, got {type(lengths).__name__} {lengths!r}")
    else:
        values = [_integer(v) for v in lengths]
        bad = [v for v, i in zip(lengths, values) if i is None]
        if bad:
            raise TypeError(f"{name} must be {expected}; {bad[0]!r} ({type(bad[0]).__name__}) is not an integer")
        out = torch.tensor(values, dtype=torch.long, device=device)
    if out.numel() == 0:
        raise ValueError(f"{name} is empty: a batch needs at least one sequence")
    if bool((out < 0).any()):
        raise ValueError(f"{name} must be non-negative, got {out.tolist()}")
    return out


def lengths_to_ptr(lengths: LengthsLike) -> Tensor:
    """Offsets of each sequence's first token: ``ptr[b] = sum(lengths[:b])``, shape (B + 1,)."""
    lengths = as_lengths(lengths)
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])


def batch_vector(lengths: LengthsLike) -> Tensor:
    """The sequence index of each token, shape (N,) with ``N = sum(lengths)``."""
    lengths = as_lengths(lengths)
    return torch.arange(lengths.numel(), device=lengths.device).repeat_interleave(lengths)


def positions(lengths: LengthsLike) -> Tensor:
    """The position of each token inside its sequence (0, 1, ..., L-1 per sequence), shape (N,)."""
    lengths = as_lengths(lengths)
    ptr = lengths_to_ptr(lengths)
    batch = batch_vector(lengths)
    return torch.arange(batch.numel(), device=lengths.device) - ptr[batch]


def _contiguous_ranges(first_source: Tensor, count: Tensor) -> Tensor:
    """Edges from a contiguous range of sources into each target.

    Target ``t`` receives the sources ``first_source[t], ..., first_source[t] + count[t] - 1``.
    Returns the edges sorted by target, then source, as a (2, sum(count)) tensor.
    """
    num_targets = count.numel()
    target = torch.arange(num_targets, device=count.device).repeat_interleave(count)  # (num_edges,)
    edge_ptr = count.cumsum(0) - count  # first edge of each target, (T,)
    rank = torch.arange(target.numel(), device=count.device) - edge_ptr[target]  # (num_edges,)
    source = first_source[target] + rank
    return torch.stack([source, target])


def complete(lengths: LengthsLike) -> Tensor:
    r"""Encoder self-attention graph: every :math:`j \to i` within each sequence.

    Args:
        lengths: tokens per sequence, shape (B,).

    Returns:
        edge_index of shape (2, sum(L_b^2)), self-loops included.

    Example::

        >>> complete([2, 1])
        tensor([[0, 1, 0, 1, 2],
                [0, 0, 1, 1, 2]])
    """
    lengths = as_lengths(lengths)
    ptr = lengths_to_ptr(lengths)
    batch = batch_vector(lengths)
    return _contiguous_ranges(ptr[batch], lengths[batch])


def causal(lengths: LengthsLike, window: int | None = None) -> Tensor:
    r"""Decoder masked self-attention graph: :math:`j \to i` for :math:`j \le i` within each sequence.

    Equals the edges allowed by ``torch.nn.Transformer.generate_square_subsequent_mask``.
    With ``window``, only the last ``window`` tokens (the token itself included):
    :math:`i - \text{window} < j \le i`, sliding-window (local) causal attention.

    Args:
        lengths: tokens per sequence, shape (B,).
        window: tokens each token may attend to (``None``: all earlier ones).

    Returns:
        edge_index of shape (2, sum(L_b (L_b + 1) / 2)) without a window.
    """
    lengths = as_lengths(lengths)
    if window is not None and _integer(window) is None:
        raise TypeError(f"window must be a positive integer (tokens attended to, self included), got {window!r}")
    if window is not None and window < 1:
        raise ValueError(f"window must be a positive integer (tokens attended to, self included), got {window!r}")
    ptr = lengths_to_ptr(lengths)
    batch = batch_vector(lengths)
    pos = torch.arange(batch.numel(), device=lengths.device) - ptr[batch]
    if window is None:
        return _contiguous_ranges(ptr[batch], pos + 1)
    return _contiguous_ranges(ptr[batch] + (pos + 1 - window).clamp(min=0), (pos + 1).clamp(max=window))


def bipartite(src_lengths: LengthsLike, tgt_lengths: LengthsLike | None = None) -> Tensor:
    r"""Cross-attention graph: every source token of pair b to every target token of pair b.

    Source and target tokens are numbered separately: row 0 indexes the
    ``sum(src_lengths)`` source tokens, row 1 the ``sum(tgt_lengths)`` target tokens.

    Args:
        src_lengths: source tokens per pair, shape (B,).
        tgt_lengths: target tokens per pair, shape (B,).

    Returns:
        edge_index of shape (2, sum(S_b T_b)).
    """
    if tgt_lengths is None:
        raise ValueError(
            "bipartite() needs tgt_lengths, the number of target tokens of each pair: "
            "call bipartite(src_lengths, tgt_lengths)"
        )
    src_lengths = as_lengths(src_lengths, "src_lengths")
    tgt_lengths = as_lengths(tgt_lengths, "tgt_lengths", device=src_lengths.device)
    if src_lengths.numel() != tgt_lengths.numel():
        raise ValueError(
            f"src_lengths has {src_lengths.numel()} sequences but tgt_lengths has "
            f"{tgt_lengths.numel()}: a seq2seq batch pairs each source with one target"
        )
    src_ptr = lengths_to_ptr(src_lengths)
    tgt_batch = batch_vector(tgt_lengths)
    return _contiguous_ranges(src_ptr[tgt_batch], src_lengths[tgt_batch])


def num_edges(kind: str, lengths: LengthsLike, tgt_lengths: LengthsLike | None = None) -> int:
    """Number of edges of a ``"complete"``, ``"causal"`` or ``"bipartite"`` graph, without building it."""
    lengths = as_lengths(lengths)
    if kind == "complete":
        return int((lengths * lengths).sum())
    if kind == "causal":
        return int((lengths * (lengths + 1) // 2).sum())
    if kind == "bipartite":
        if tgt_lengths is None:
            raise ValueError("num_edges('bipartite', ...) needs tgt_lengths")
        return int((lengths * as_lengths(tgt_lengths, "tgt_lengths")).sum())
    raise ValueError(f"unknown graph kind {kind!r}; expected 'complete', 'causal' or 'bipartite'")


def padding_mask(lengths: LengthsLike, max_len: int | None = None) -> Tensor:
    """torch-style key padding mask of right-padded sequences: (B, max_len) bool, ``True`` = padding."""
    lengths = as_lengths(lengths)
    longest = int(lengths.max())
    max_len = longest if max_len is None else max_len
    if max_len < longest:
        raise ValueError(f"max_len={max_len} is shorter than the longest sequence ({longest})")
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def to_nodes(padded: Tensor, lengths: LengthsLike, batch_first: bool = True) -> Tensor:
    """Right-padded (B, L, F) (or (L, B, F) without ``batch_first``) -> the real tokens (N, F), in batch order."""
    lengths = as_lengths(lengths, device=padded.device)
    if padded.dim() != 3:
        raise ValueError(f"padded must be 3-D (batch, length, features), got shape {tuple(padded.shape)}")
    if not batch_first:
        padded = padded.transpose(0, 1)
    if padded.size(0) != lengths.numel():
        raise ValueError(f"lengths has {lengths.numel()} sequences but padded holds {padded.size(0)}")
    if int(lengths.max()) > padded.size(1):
        raise ValueError(
            f"lengths say the longest sequence has {int(lengths.max())} tokens but padded holds only {padded.size(1)}"
        )
    return padded[~padding_mask(lengths, padded.size(1))]  # (N, F)


def to_padded(nodes: Tensor, lengths: LengthsLike, max_len: int | None = None, batch_first: bool = True,
              padding_value: float = 0.0) -> Tensor:
    """Node features (N, F) of a ragged batch -> right-padded (B, L, F) (or (L, B, F))."""
    lengths = as_lengths(lengths, device=nodes.device)
    total = int(lengths.sum())
    if nodes.size(0) != total:
        raise ValueError(f"lengths add up to {total} tokens but nodes has {nodes.size(0)} rows")
    mask = padding_mask(lengths, max_len)
    out = nodes.new_full((*mask.shape, *nodes.shape[1:]), padding_value)
    out[~mask] = nodes
    return out if batch_first else out.transpose(0, 1)

