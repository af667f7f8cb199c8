"""Dropout on attention pairs without generator state: a counter-based hash of (seed, key).

Shared by the chunk, tile and segment paths of the ``"chunked"`` backend, so that all drop the same
pairs ``j -> i`` for a head, whatever the chunk or tile they fall in.
"""
from __future__ import annotations

from torch import Tensor

__all__ = ["dropout_keep"]

_MASK32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit avalanche hash, a bijection of [0, 2**32) (hash-prospector's ``16 21f0aaad 15 735a2d97 15``).

    Both multipliers are below 2**31, so ``x * c`` of an ``x`` below 2**32 stays below 2**63:
    exact in int64 (no overflow), then reduced mod 2**32.
    """
    x = ((x ^ (x >> 16)) * 0x21F0AAAD) & _MASK32
    x = ((x ^ (x >> 15)) * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def dropout_keep(seed: Tensor, key: Tensor, dropout_p: float, num_keys: int = 2**63) -> Tensor:
    r"""Which entries dropout keeps: a counter-based draw per ``key``, no generator state.

    .. math:: h = \text{mix}_{32}(\text{mix}_{32}(\text{lo}(key) \oplus s_0) \oplus \text{hi}(key)
              \oplus s_1), \qquad \text{keep} = h \ge \lfloor p \cdot 2^{32} \rceil

    so each entry is kept with probability :math:`1 - p` (to :math:`2^{-32}`), distinct keys
    draw as if independently (two rounds of an avalanche hash; one round leaves correlations
    of about 0.002 between neighbouring keys), and the same key gives the same answer in
    forward, backward and the weights pass.  About twenty int64 operations per entry: in
    eager mode on a CPU a few times the cost of ``torch.rand`` (the price of drawing without
    generator state on the host).

    Args:
        seed: (2,) int64 tensor of two words in [0, 2**32) (drawn per call from torch's generator).
        key: int64 tensor of non-negative keys (here ``(target * S + source) * H + head``).
        dropout_p: the dropout probability.
        num_keys: a bound on the keys (a Python int, ``T * S * H`` here); below 2**32 ``hi(key)`` is 0.

    Returns:
        a bool tensor shaped like ``key``.
    """
    if num_keys <= 2**32:
        h = _mix32(_mix32(key ^ seed[0]) ^ seed[1])
    else:
        h = _mix32(_mix32((key & _MASK32) ^ seed[0]) ^ (key >> 32) ^ seed[1])
    return h >= round(dropout_p * 2**32)
