r"""Prepared graphs: the index structures of the fast attention backends, built once per graph.

A plain ``edge_index`` is a list of edges in the user's order.  The fast backends need it
rearranged, and a stack of layers (or a model) should pay for that once, not once per layer:
a :class:`PreparedGraph` holds the edge index, the node counts it was built for and, built
on first use **on the graph's device** and timed (``timings_ms``):

* :attr:`PreparedGraph.csr` (:class:`CSRLayout`) -- edges sorted by target, then source:
  ``ptr`` (T + 1,) so that the edges into target ``i`` are the sorted positions
  ``ptr[i] .. ptr[i + 1] - 1``.  The ``"chunked"`` backend walks it in chunks of targets.
* :attr:`PreparedGraph.tiles` (:class:`TileLayout`) -- the (target x source) plane cut into
  ``block_m x block_n`` tiles; only tiles holding an edge are listed, each *full* (every
  pair is an edge: no mask work) or *partial* (a bitmask, ``block_m * block_n / 8`` bytes),
  listed per row block (forward, dq) and per column block (dk, dv), longest lists first.
  The ``"fused"`` backend runs one Triton program per row (or column) block and head.

Both layouts keep a permutation from their order back to the user's edge order, so edge
biases, their gradients and returned attention weights are always in the user's order.
Pass a prepared graph wherever an ``edge_index`` is accepted (functions, modules, layers,
stacks, ``Data.edge_index`` of the models): every layer then reuses the same structures.

Example::

    >>> import torch
    >>> from gnn_transformer import graph_attention, graphs, prepare_graph
    >>> graph = prepare_graph(graphs.complete([5, 3]), 8)     # 8 tokens, self-attention
    >>> q = k = v = torch.randn(8, 2, 4)                        # 2 heads of size 4
    >>> out = graph_attention(q, k, v, graph, backend="chunked")
    >>> graph                                                   # the chunked backend's layout, built once
    PreparedGraph(num_edges=34, num_sources=8, num_targets=8, block_size=(64, 64), built=['csr'])
    >>> torch.allclose(out, graph_attention(q, k, v, graphs.complete([5, 3])))
    True
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import Tensor

from .validation import check_edge_index

__all__ = ["PreparedGraph", "prepare_graph", "preparation", "CSRLayout", "TileLayout"]

INT32_MAX = 2**31 - 1

Preparation = Callable[["PreparedGraph", "int | None", "int | None"], None]
PREPARATIONS: dict[str, Preparation] = {}


def preparation(backend: str) -> Callable[[Preparation], Preparation]:
    """Register what a graph prepared for ``backend`` builds: ``prepare(graph, num_heads, head_dim)``.

    Used as a decorator by each backend module; :meth:`PreparedGraph.prepare` runs it.
    """
    def register(prepare: Preparation) -> Preparation:
        PREPARATIONS[backend] = prepare
        return prepare

    return register


@preparation("reference")
def _prepare_reference(graph: "PreparedGraph", num_heads: int | None, head_dim: int | None) -> None:
    """Nothing: the reference backend runs on the edge index itself."""


@preparation("fused")
def _prepare_fused(graph: "PreparedGraph", num_heads: int | None, head_dim: int | None) -> None:
    graph.tiles  # noqa: B018 -- built and kept on the graph
    graph.tile_edge_ids  # noqa: B018


@dataclass
class CSRLayout:
    """Edges sorted by (target, source).

    Attributes:
        ptr: (T + 1,) int64, edges into target ``i`` are sorted positions ``ptr[i]:ptr[i+1]``.
        col: (num_edges,) source of each sorted edge (a view of ``edge_index[0]`` when the
            user's edges were already sorted).
        perm: (num_edges,) int64 user edge id of each sorted position, or ``None`` (identity).
        has_duplicates: whether some edge ``j -> i`` occurs more than once.
    """

    ptr: Tensor
    col: Tensor
    perm: Tensor | None
    has_duplicates: bool


@dataclass
class TileLayout:
    """Block-sparse tiles of the (target x source) plane; only tiles holding edges.

    Tile ``t`` covers targets ``tile_row[t] * block_m + [0, block_m)`` and sources
    ``tile_col[t] * block_n + [0, block_n)``.  Its edges occupy the tile-major positions
    ``tile_offset[t] ..`` in row-major order inside the tile; ``in_user_order`` says whether
    that is the user's order (else :attr:`PreparedGraph.tile_edge_ids` maps positions to the
    user's edge ids; it is built only for biases, dropout and weights).  ``tile_mask[t]`` is ``-1`` for a
    full tile, else the index of its bitmask in ``masks`` (num_partial, block_m,
    block_n / bits) int32, bit ``c % bits`` of word ``c // bits`` of row ``r`` = pair (r, c).
    ``row_ptr``/``row_order`` list the tiles per row block (tiles are stored row-block major)
    and the row blocks longest first; ``col_ptr``/``col_tiles``/``col_order`` the same per
    column block.  All index tensors are int32.
    """

    block_m: int
    block_n: int
    bits: int
    num_row_blocks: int
    num_col_blocks: int
    tile_row: Tensor
    tile_col: Tensor
    tile_offset: Tensor
    tile_mask: Tensor
    masks: Tensor
    in_user_order: bool
    row_ptr: Tensor
    row_order: Tensor
    col_ptr: Tensor
    col_tiles: Tensor
    col_order: Tensor
    has_duplicates: bool

    @property
    def num_tiles(self) -> int:
        return self.tile_row.numel()

    @property
    def num_partial(self) -> int:
        return self.masks.size(0)


def _nbytes(layout) -> int:
    return sum(value.numel() * value.element_size() for value in (getattr(layout, f.name) for f in fields(layout))
               if isinstance(value, Tensor))


def _is_sorted(key: Tensor) -> bool:
    return key.numel() < 2 or bool((key[1:] >= key[:-1]).all())


def _sort(key: Tensor) -> tuple[Tensor, Tensor | None]:
    """Sorted keys and the permutation (``None`` when ``key`` is already sorted)."""
    if _is_sorted(key):
        return key, None
    key, perm = torch.sort(key, stable=True)
    return key, perm


def _has_duplicates(sorted_key: Tensor) -> bool:
    return sorted_key.numel() > 1 and bool((sorted_key[1:] == sorted_key[:-1]).any())


def build_csr(edge_index: Tensor, num_sources: int, num_targets: int) -> CSRLayout:
    """Sort edges by (target, source) on their device; see :class:`CSRLayout`."""
    source, target = edge_index[0], edge_index[1]
    key, perm = _sort(target * num_sources + source)  # (num_edges,)
    col = source if perm is None else source[perm]
    counts = torch.bincount(target, minlength=num_targets)  # (T,)
    ptr = torch.zeros(num_targets + 1, dtype=torch.int64, device=edge_index.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return CSRLayout(ptr=ptr, col=col, perm=perm, has_duplicates=_has_duplicates(key))


def _pack_bits(tile_of_edge: Tensor, row: Tensor, col: Tensor, tile_mask: Tensor, num_partial: int,
               block_m: int, block_n: int, bits: int) -> Tensor:
    """Bitmasks (num_partial, block_m, block_n // bits) int32 of the partial tiles."""
    words_per_row = block_n // bits
    words = torch.zeros(num_partial * block_m * words_per_row, dtype=torch.int64, device=row.device)
    slot = tile_mask[tile_of_edge].long()  # (num_edges,) -1 for edges in full tiles
    in_partial = slot >= 0
    index = (slot * block_m + row) * words_per_row + col // bits
    value = torch.bitwise_left_shift(torch.ones_like(col), col % bits)
    words.index_add_(0, index[in_partial], value[in_partial])  # distinct bits: the sum is the OR
    words = torch.where(words >= 2**31, words - 2**32, words)  # two's complement int32
    return words.to(torch.int32).view(num_partial, block_m, words_per_row)


def _lists(owner: Tensor, num_blocks: int) -> tuple[Tensor, Tensor]:
    """CSR pointer over blocks for tiles grouped by ``owner``, and the blocks longest first."""
    counts = torch.bincount(owner.long(), minlength=num_blocks)  # (num_blocks,)
    ptr = torch.zeros(num_blocks + 1, dtype=torch.int64, device=owner.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    order = torch.sort(counts, descending=True, stable=True).indices
    return ptr.to(torch.int32), order.to(torch.int32)


def _tile_major_key(edge_index: Tensor, num_sources: int, block_m: int, block_n: int) -> Tensor:
    """Sort key of the tile-major order: (row block, column block, row, column)."""
    source, target = edge_index[0], edge_index[1]
    num_col_blocks = -(-num_sources // block_n)
    local = (target % block_m) * block_n + source % block_n  # row-major position inside the tile
    return ((target // block_m) * num_col_blocks + source // block_n) * (block_m * block_n) + local


def tile_edge_ids(edge_index: Tensor, num_sources: int, block_m: int, block_n: int) -> Tensor | None:
    """(num_edges,) int32 user edge id of each tile-major position, or ``None`` (identity)."""
    perm = _sort(_tile_major_key(edge_index, num_sources, block_m, block_n))[1]
    return None if perm is None else perm.to(torch.int32)


def build_tiles(edge_index: Tensor, num_sources: int, num_targets: int, block_m: int, block_n: int) -> TileLayout:
    """Cut the graph into ``block_m x block_n`` tiles on its device; see :class:`TileLayout`.

    One sort of the edges by (tile, row, column) gives the tiles, their edge counts (full
    when a tile holds every pair it covers), the tile-major order and the bitmasks; nothing
    of size ``num_targets x num_sources`` is ever formed.
    """
    device = edge_index.device
    num_row_blocks = -(-num_targets // block_m)
    num_col_blocks = -(-num_sources // block_n)
    tile_area = block_m * block_n
    key, perm = _sort(_tile_major_key(edge_index, num_sources, block_m, block_n))  # (num_edges,)
    tile_key, counts = torch.unique_consecutive(key // tile_area, return_counts=True)  # (num_tiles,)
    tile_row, tile_col = tile_key // num_col_blocks, tile_key % num_col_blocks
    rows_in = (num_targets - tile_row * block_m).clamp(max=block_m)
    cols_in = (num_sources - tile_col * block_n).clamp(max=block_n)
    partial = counts != rows_in * cols_in
    tile_mask = torch.where(partial, torch.cumsum(partial, 0) - 1, -1).to(torch.int32)  # (num_tiles,)
    tile_offset = torch.cumsum(counts, 0) - counts
    tile_of_edge = torch.repeat_interleave(torch.arange(tile_key.numel(), device=device), counts)
    bits = min(32, block_n)
    masks = _pack_bits(tile_of_edge, (key % tile_area) // block_n, key % block_n, tile_mask, int(partial.sum()),
                       block_m, block_n, bits)
    row_ptr, row_order = _lists(tile_row, num_row_blocks)
    col_tiles = torch.sort(tile_col * num_row_blocks + tile_row, stable=True).indices
    col_ptr, col_order = _lists(tile_col, num_col_blocks)
    int32 = dict(dtype=torch.int32)
    return TileLayout(
        block_m=block_m, block_n=block_n, bits=bits, num_row_blocks=num_row_blocks, num_col_blocks=num_col_blocks,
        tile_row=tile_row.to(**int32), tile_col=tile_col.to(**int32), tile_offset=tile_offset.to(**int32),
        tile_mask=tile_mask, masks=masks, in_user_order=perm is None,
        row_ptr=row_ptr, row_order=row_order, col_ptr=col_ptr, col_tiles=col_tiles.to(**int32),
        col_order=col_order, has_duplicates=_has_duplicates(key),
    )


def _check_block_size(block_size) -> tuple[int, int]:
    block_m, block_n = (block_size, block_size) if isinstance(block_size, int) else tuple(block_size)
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size < 16 or size & (size - 1):
            raise ValueError(f"block_size needs powers of two >= 16 (tensor-core tiles), got {name} = {size}")
    return block_m, block_n


class PreparedGraph:
    """An edge index with its node counts and the layouts the fast backends run on.

    Build with :func:`prepare_graph`.  The edge index is validated here, once, and trusted
    afterwards.  Layouts are built on first use (or by :meth:`prepare`), on the graph's
    device, and their wall time is recorded in ``timings_ms`` (``"csr"``, ``"tiles"``);
    :meth:`structure_bytes` counts what they hold (the user's ``edge_index`` excluded).

    Args:
        edge_index: (2, num_edges) integer tensor, row 0 sources j, row 1 targets i.
        num_sources: number of source (key/value) nodes S.
        num_targets: number of target (query) nodes T; default ``num_sources``.
        block_size: tile size ``(block_m, block_n)`` (or one int) of the ``"fused"`` layout,
            powers of two >= 16.
    """

    def __init__(self, edge_index: Tensor, num_sources: int, num_targets: int | None = None, *,
                 block_size: int | tuple[int, int] = (64, 64)) -> None:
        num_targets = num_sources if num_targets is None else num_targets
        check_edge_index(edge_index, num_sources=num_sources, num_targets=num_targets)
        if edge_index.size(1) > INT32_MAX:
            raise ValueError(f"a prepared graph holds at most {INT32_MAX} edges, got {edge_index.size(1)}")
        self._setup(edge_index, num_sources, num_targets, _check_block_size(block_size))

    @classmethod
    def from_checked(cls, edge_index: Tensor, num_sources: int, num_targets: int, *,
                     block_size: int | tuple[int, int] = (64, 64)) -> "PreparedGraph":
        """Wrap an edge index that the caller has already validated (no second check, no host sync).

        For the library's own boundary functions, which check a plain ``edge_index`` once
        (:func:`~gnn_transformer.backends.validation.check_edge_index`) and then prepare it.
        """
        graph = cls.__new__(cls)
        graph._setup(edge_index, num_sources, num_targets, _check_block_size(block_size))
        return graph

    def _setup(self, edge_index: Tensor, num_sources: int, num_targets: int, block_size: tuple[int, int]) -> None:
        self.edge_index = edge_index.long()
        self.num_sources = int(num_sources)
        self.num_targets = int(num_targets)
        self.block_size = block_size
        self.timings_ms: dict[str, float] = {}
        self._csr: CSRLayout | None = None
        self._tiles: TileLayout | None = None
        self._tile_edge_ids: Tensor | None = None
        self._derived: dict = {}
        self.prepared_for: set[str] = set()

    def prepare(self, backend: str, num_heads: int | None = None, head_dim: int | None = None) -> "PreparedGraph":
        """Build now everything ``backend`` needs on this graph (see the module docstring); returns ``self``.

        Args:
            backend: ``"reference"``, ``"chunked"``, ``"fused"`` or ``"auto"``.
            num_heads: attention heads H of the calls to come (the chunk plan depends on it).
            head_dim: head size C of those calls (the larger of the key and value head sizes).

        Idempotent: layouts and plans already built are kept.
        """
        if backend not in PREPARATIONS:
            raise ValueError(f"cannot prepare a graph for backend {backend!r}; known: {sorted(PREPARATIONS)}")
        if (num_heads is None) != (head_dim is None):
            raise ValueError(f"give num_heads and head_dim together (the chunk plan needs both), got "
                             f"num_heads={num_heads} and head_dim={head_dim}")
        if num_heads is not None and (num_heads <= 0 or head_dim <= 0):
            raise ValueError(f"num_heads and head_dim must be positive, got {num_heads} and {head_dim}")
        PREPARATIONS[backend](self, num_heads, head_dim)
        self.prepared_for.add(backend)
        return self

    @property
    def num_edges(self) -> int:
        return self.edge_index.size(1)

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    def _timed(self, name: str, build: Callable):
        synchronize = torch.cuda.synchronize if self.device.type == "cuda" else (lambda *_: None)
        synchronize(self.device)
        start = time.perf_counter()
        layout = build()
        synchronize(self.device)
        self.timings_ms[name] = (time.perf_counter() - start) * 1e3
        return layout

    @property
    def csr(self) -> CSRLayout:
        """Edges sorted by target (built on first use)."""
        if self._csr is None:
            self._csr = self._timed("csr", lambda: build_csr(self.edge_index, self.num_sources, self.num_targets))
        return self._csr

    @property
    def tiles(self) -> TileLayout:
        """Block-sparse tiles with bitmasks (built on first use)."""
        if self._tiles is None:
            self._tiles = self._timed("tiles", lambda: build_tiles(self.edge_index, self.num_sources,
                                                                   self.num_targets, *self.block_size))
        return self._tiles

    @property
    def tile_edge_ids(self) -> Tensor | None:
        """User edge id of each tile-major position (int32), ``None`` when that is the user's order.

        Built on first use (one more sort), for edge biases, dropout and returned weights.
        """
        if self.tiles.in_user_order:
            return None
        if self._tile_edge_ids is None:
            self._tile_edge_ids = self._timed("tile_edge_ids", lambda: tile_edge_ids(
                self.edge_index, self.num_sources, *self.block_size))
        return self._tile_edge_ids

    @property
    def has_duplicates(self) -> bool:
        """Whether some edge occurs twice (from whichever layout exists; builds the CSR otherwise)."""
        layout = self._tiles if self._tiles is not None else self.csr
        return layout.has_duplicates

    def structure_bytes(self) -> int:
        """Bytes held by the built layouts (a CSR ``col`` that is a view of ``edge_index`` counts 0)."""
        total = 0
        if self._csr is not None:
            total += _nbytes(self._csr)
            if self._csr.perm is None:
                total -= self._csr.col.numel() * self._csr.col.element_size()
        if self._tiles is not None:
            total += _nbytes(self._tiles)
        if self._tile_edge_ids is not None:
            total += self._tile_edge_ids.numel() * 4
        return total

    def derived(self, key, build: Callable[[], "PreparedGraph"]) -> "PreparedGraph":
        """A graph derived from this one (e.g. with virtual source nodes), built once and kept."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def __repr__(self) -> str:
        built = [name for name, layout in (("csr", self._csr), ("tiles", self._tiles)) if layout is not None]
        prepared = f", prepared_for={sorted(self.prepared_for)}" if self.prepared_for else ""
        return (f"PreparedGraph(num_edges={self.num_edges}, num_sources={self.num_sources}, "
                f"num_targets={self.num_targets}, block_size={self.block_size}, built={built}{prepared})")


def prepare_graph(edge_index: Tensor, num_sources: int, num_targets: int | None = None, *,
                  block_size: int | tuple[int, int] = (64, 64), layouts: tuple[str, ...] = (),
                  backend: str | None = None, num_heads: int | None = None,
                  head_dim: int | None = None) -> PreparedGraph:
    """Prepare ``edge_index`` once for every layer that attends along it.

    Args:
        edge_index: (2, num_edges), row 0 sources j, row 1 targets i.
        num_sources: number of source nodes S (all tokens, for self-attention).
        num_targets: number of target nodes T; default ``num_sources``.
        block_size: tile size of the ``"fused"`` layout.
        layouts: layouts to build now (``"csr"``, ``"tiles"``, ``"tile_edge_ids"``) so that their
            time is spent (and recorded in ``timings_ms``) here rather than in the first call.
        backend: build now everything this backend needs (:meth:`PreparedGraph.prepare`), so
            that calls on the graph make no host sync and, compiled, no graph break.
        num_heads, head_dim: heads and head size of the calls to come (for the chunk plan).

    Returns:
        a :class:`PreparedGraph`, accepted wherever an ``edge_index`` is.
    """
    graph = PreparedGraph(edge_index, num_sources, num_targets, block_size=block_size)
    for name in layouts:
        if name not in ("csr", "tiles", "tile_edge_ids"):
            raise ValueError(f"unknown layout {name!r}; choose from 'csr', 'tiles', 'tile_edge_ids'")
        getattr(graph, name)
    if backend is not None:
        graph.prepare(backend, num_heads, head_dim)
    elif num_heads is not None or head_dim is not None:
        raise ValueError("num_heads and head_dim say what to prepare for a backend: give backend= as well")
    return graph
