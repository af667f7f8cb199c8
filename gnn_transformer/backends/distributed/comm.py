r"""The communication primitives of the strategies, each counting the bytes it sends.

:class:`Traffic` counts the bytes one rank sends to *other* ranks (the block an
``all_to_all_single`` keeps on the rank itself is a copy, not communication), per pass.
:func:`all_to_all` is ``all_to_all_single`` along rows with uneven counts, differentiable:
its backward is the all-to-all with the counts swapped, so a gradient goes back to the rank
its row came from.  :func:`ring_shift` sends a tensor to rank ``r + 1`` and receives one from
rank ``r - 1`` without blocking (the caller computes while it travels).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Traffic", "all_to_all", "ring_shift"]


@dataclass
class Traffic:
    """Bytes this rank sent to other ranks: ``forward`` and ``backward`` passes, and ``calls``."""

    forward: int = 0
    backward: int = 0
    calls: dict = field(default_factory=dict)

    def add(self, direction: str, nbytes: int) -> None:
        setattr(self, direction, getattr(self, direction) + int(nbytes))
        self.calls[direction] = self.calls.get(direction, 0) + 1

    def reset(self) -> None:
        self.forward = self.backward = 0
        self.calls = {}


def _row_bytes(x: Tensor) -> int:
    row = 1
    for size in x.shape[1:]:
        row *= size
    return row * x.element_size()


def _exchange(x: Tensor, send: list[int], receive: list[int], group, traffic: Traffic, direction: str) -> Tensor:
    out = x.new_empty((sum(receive), *x.shape[1:]))  # (sum(receive), ...)
    dist.all_to_all_single(out, x.contiguous(), receive, send, group=group)
    rank = dist.get_rank(group)
    traffic.add(direction, (sum(send) - send[rank]) * _row_bytes(x))
    return out


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, send, receive, group, traffic):
        ctx.send, ctx.receive, ctx.group, ctx.traffic = send, receive, group, traffic
        return _exchange(x, send, receive, group, traffic, "forward")

    @staticmethod
    def backward(ctx, grad):
        return _exchange(grad, ctx.receive, ctx.send, ctx.group, ctx.traffic, "backward"), None, None, None, None


def all_to_all(x: Tensor, send: list[int], receive: list[int], group, traffic: Traffic) -> Tensor:
    """Rows ``x`` (sum(send), ...) split by ``send`` to ranks 0..P-1; returns (sum(receive), ...)."""
    return _AllToAll.apply(x, list(send), list(receive), group, traffic)


def ring_shift(x: Tensor, receive_shape: tuple, group, traffic: Traffic, direction: str, tag: int = 0):
    """Start sending ``x`` to rank r + 1 and receiving a ``receive_shape`` tensor from r - 1.

    Shifts in flight at the same time carry different ``tag``s (a key/value block and a gradient
    accumulator travel together in the ring's backward).  Returns ``(buffer, wait)``: call
    ``wait()`` before reading ``buffer``.
    """
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    buffer = x.new_empty(receive_shape)
    to_rank = dist.get_global_rank(group, (rank + 1) % size) if group is not None else (rank + 1) % size
    from_rank = dist.get_global_rank(group, (rank - 1) % size) if group is not None else (rank - 1) % size
    x = x.contiguous()  # kept alive until wait()
    ops = []  # an empty block travels as nothing: both ends know its size
    if x.numel():
        ops.append(dist.P2POp(dist.isend, x, to_rank, group, tag))
    if buffer.numel():
        ops.append(dist.P2POp(dist.irecv, buffer, from_rank, group, tag))
    requests = dist.batch_isend_irecv(ops) if ops else []
    traffic.add(direction, x.numel() * x.element_size())

    def wait() -> Tensor:
        for request in requests:
            request.wait()
        del ops[:]
        return buffer

    return buffer, wait
