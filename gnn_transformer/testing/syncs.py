r"""Count host-device synchronisations: every place a value computed by torch is read back to Python.

On a GPU, reading a tensor's value on the host (``.item()``, ``int(t)``, ``bool(t)``,
``if t.any():``, ``.tolist()``) waits for every kernel queued before it, and an operator
whose output size depends on the data (``nonzero``, a boolean mask index, ``unique``,
``repeat_interleave`` without ``output_size``) does the same.  On a CPU nothing waits, so
the same code runs fine there and stalls on a GPU; :func:`count_host_syncs` finds it on
either:

* every scalar read back (``aten._local_scalar_dense``: what ``item``, ``int``, ``float``,
  ``bool`` and ``__index__`` of a tensor run), and ``equal``, ``allclose``, ``is_nonzero``,
  seen by a :class:`~torch.utils._python_dispatch.TorchDispatchMode` (so reads from C++,
  inside an operator's Python wrapper, or in the backward pass count too);
* ``Tensor.tolist`` and ``Tensor.numpy`` (which bypass the dispatcher on the CPU);
* operators whose output size depends on the data (listed in :data:`DATA_DEPENDENT`);
* on a machine with CUDA, ``torch.cuda.set_sync_debug_mode("error")`` as well, so that a
  synchronising CUDA call raises where it happens.

Example::

    >>> import torch
    >>> from gnn_transformer import GraphTransformerEncoderLayer, graphs, prepare_graph
    >>> layer = GraphTransformerEncoderLayer(8, 2, 16, dropout=0.0, backend="chunked")
    >>> graph = prepare_graph(graphs.complete([3, 2]), 5, backend="chunked", num_heads=2, head_dim=4)
    >>> x = torch.randn(5, 8, requires_grad=True)
    >>> with count_host_syncs() as syncs:
    ...     out = layer(x, graph)
    ...     out.sum().backward()
    >>> syncs.count
    0
"""
from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncs", "count_host_syncs", "DATA_DEPENDENT", "SCALAR_READS"]

aten = torch.ops.aten

#: operators that return a Python value read from a tensor's data
SCALAR_READS = (aten._local_scalar_dense.default, aten.equal.default, aten.is_nonzero.default, aten.allclose.default)

#: operators whose output size depends on the data (a GPU must finish them before allocating)
DATA_DEPENDENT = (
    aten.nonzero.default, aten.nonzero_static.default, aten.masked_select.default, aten.unique_consecutive.default,
    aten._unique2.default, aten.unique_dim.default, aten.bincount.default,
)


def _caller() -> str:
    """The innermost frame outside torch and this module: where the sync was asked for."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = frame.filename.replace("\\", "/")
        if "/torch/" not in path and not path.endswith("testing/syncs.py") and "contextlib" not in path:
            return f"{path}:{frame.lineno} in {frame.name}"
    return "<unknown>"


@dataclass
class HostSyncs:
    """The host reads seen while :func:`count_host_syncs` was active: ``(what, where)`` pairs."""

    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.events)

    def record(self, what: str) -> None:
        self.events.append((what, _caller()))

    def __repr__(self) -> str:
        lines = [f"{what} at {where}" for what, where in self.events]
        return f"HostSyncs(count={self.count}" + "".join(f"\n  {line}" for line in lines) + ")"


class _SyncMode(TorchDispatchMode):
    def __init__(self, syncs: HostSyncs) -> None:
        super().__init__()
        self.syncs = syncs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SCALAR_READS or func in DATA_DEPENDENT:
            self.syncs.record(str(func))
        elif func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            self.syncs.record(f"{func} without output_size")
        elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) and any(
                index is not None and index.dtype == torch.bool for index in args[1]):
            self.syncs.record(f"{func} with a boolean mask")
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_host_syncs(cuda_debug_mode: str | None = "error") -> Iterator[HostSyncs]:
    """Record every host-device synchronisation in the block (see the module docstring).

    Args:
        cuda_debug_mode: when CUDA is available, ``torch.cuda.set_sync_debug_mode`` for the
            block (``"error"``: a synchronising CUDA call raises; ``"warn"``; ``None``: leave it).

    Yields:
        a :class:`HostSyncs` that fills while the block runs.
    """
    syncs = HostSyncs()
    originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}

    def counted(name):
        def read(self, *args, **kwargs):
            syncs.record(f"Tensor.{name}")
            return originals[name](self, *args, **kwargs)
        return read

    cuda = cuda_debug_mode is not None and torch.cuda.is_available()
    previous = torch.cuda.get_sync_debug_mode() if cuda else None
    for name in originals:
        setattr(torch.Tensor, name, counted(name))
    try:
        if cuda:
            torch.cuda.set_sync_debug_mode(cuda_debug_mode)
        with _SyncMode(syncs):
            yield syncs
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
        if cuda:
            torch.cuda.set_sync_debug_mode(previous)
