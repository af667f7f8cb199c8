r"""The tile plan of the chunked backend: which ``b x b`` tiles of the (target x source) plane hold edges.

The tile size is chosen per graph, once, from the candidates :data:`BLOCK_SIZES`, minimising
the entries computed plus a per-tile cost (:data:`TILE_COST`): ragged batches of 32-token
sequences get 32 x 32 tiles (no entry wasted), one sequence of 128 tokens one tile.  A graph
whose best tiles would compute more than :data:`MAX_WASTE` times its edge count (random graphs,
hubs beside sparse rows) or that repeats an edge (a tile holds each pair once) is left to the
chunk path (:func:`tile_plan` returns ``None``).  Tiles are processed in groups of whole row
blocks, each under ``MAX_ELEMENTS`` scores, so memory stays bounded on large graphs.

:mod:`.tiled` computes attention on them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .prepared import PreparedGraph

__all__ = ["TileGroup", "TilePlan", "tile_plan", "plan_tiles", "choose_block", "BLOCK_SIZES", "MAX_WASTE", "TILE_COST",
           "MAX_ELEMENTS"]

BLOCK_SIZES = (16, 32, 64, 128)
TILE_COST = 1024  # entries' worth of work per tile (gathers, scatter, call overhead), for choosing the tile size
MAX_WASTE = 6.0  # tiles when their entries are at most this many times the edges; the chunk path otherwise
MAX_ELEMENTS = 2**22  # scores (tiles x heads x b x b) per group
DENSE_COUNT_BINS = 2**20  # planning counts the tiles in one pass up to this many tiles in the plane ...
DENSE_COUNT_PER_EDGE = 4  # ... or this many per edge; by sorting beyond (see _tile_counts)


@dataclass(frozen=True)
class TileGroup:
    """Tiles ``t0:t1`` (whole row blocks ``r0:r1``); ``rows`` (t1 - t0,) their row block minus ``r0``."""

    t0: int
    t1: int
    r0: int
    r1: int
    rows: Tensor
    cols: Tensor
    c0: int  # first column block when the group's tiles are column blocks c0, c0 + 1, ... (diagonal); else -1
    mask: Tensor | None  # (Nt, 1, b, b) bool, True off the edges; None: every tile of the group is full
    one_per_row: bool  # each row block of the group has exactly one tile: no merge
    edge_ids: Tensor  # (Eg,) user ids of the group's edges
    edge_slots: Tensor  # (Eg,) their positions in the group's flattened (Nt, b, b) tiles
    cache: dict = field(default_factory=dict, compare=False)  # dtype -> the mask as factors and terms


@dataclass(frozen=True)
class TilePlan:
    """The non-empty ``block x block`` tiles of a graph, grouped under the element budget.

    ``tile_row``, ``tile_col`` (N_t,) int64 row and column block of each tile (row-block major);
    each group lists its edges' user ids and their positions in its flattened (Nt, b, b) tiles.
    """

    block: int
    num_row_blocks: int
    num_col_blocks: int
    tile_row: Tensor
    tile_col: Tensor
    groups: tuple[TileGroup, ...]

    @property
    def num_tiles(self) -> int:
        return self.tile_row.numel()

    def nbytes(self) -> int:
        """Bytes of the plan's tensors (tile indices, per-edge slots, masks of the partial groups)."""
        tensors = [self.tile_row, self.tile_col]
        for group in self.groups:
            tensors += [group.rows, group.cols, group.edge_ids, group.edge_slots]
            tensors += [] if group.mask is None else [group.mask]
        return sum(t.numel() * t.element_size() for t in tensors)


def _tile_counts(target: Tensor, source: Tensor, block: int, graph: PreparedGraph) -> tuple[Tensor, Tensor, Tensor]:
    """The tile key of every edge, the distinct tiles (sorted keys, row-block major) and their edge counts.

    Counted in one pass over the edges (``bincount`` over every tile of the plane) when the plane
    has at most :data:`DENSE_COUNT_BINS` tiles or :data:`DENSE_COUNT_PER_EDGE` per edge, else by
    sorting (``unique``); both give the same sorted keys and counts.
    """
    num_col_blocks = -(-graph.num_sources // block)
    keys = (target // block) * num_col_blocks + source // block  # (num_edges,)
    num_tiles = -(-graph.num_targets // block) * num_col_blocks
    if num_tiles <= max(DENSE_COUNT_BINS, DENSE_COUNT_PER_EDGE * keys.numel()):
        counts = torch.bincount(keys, minlength=num_tiles)  # (num_tiles,)
        present = counts.nonzero().squeeze(1)  # host: once per graph
        return keys, present, counts[present]
    return keys, *torch.unique(keys, return_counts=True)


def choose_block(graph: PreparedGraph, num_heads: int, head_dim: int) -> tuple[int, float]:
    """The tile size of least cost (entries + :data:`TILE_COST` per tile) and its entries per edge."""
    source, target = graph.edge_index[0], graph.edge_index[1]
    best = None
    for block in BLOCK_SIZES:
        num_tiles = _tile_counts(target, source, block, graph)[1].numel()
        area = num_tiles * block * block
        cost = area + TILE_COST * num_tiles
        if best is None or cost < best[0]:
            best = (cost, block, area / max(graph.num_edges, 1))
    return best[1], best[2]


def plan_tiles(graph: PreparedGraph, num_heads: int, block: int, max_elements: int | None = None) -> TilePlan:
    """Tiles of ``block x block`` holding ``graph``'s edges, their masks and groups (host work, once per graph)."""
    max_elements = MAX_ELEMENTS if max_elements is None else max_elements
    device = graph.device
    source, target = graph.edge_index[0], graph.edge_index[1]
    num_row_blocks, num_col_blocks = -(-graph.num_targets // block), -(-graph.num_sources // block)
    edge_keys, keys, counts = _tile_counts(target, source, block, graph)  # (num_edges,), (N_t,), (N_t,)
    tile_row, tile_col = keys // num_col_blocks, keys % num_col_blocks
    tile_of_edge = torch.searchsorted(keys, edge_keys)  # (num_edges,)
    edge_slot = (tile_of_edge * block + target % block) * block + source % block  # (num_edges,)
    full = counts == block * block  # boundary tiles that stick out of the plane are partial
    # the edge in every slot of the tiles (-1: none; edges are distinct), so no sort of the slots
    slot_edge = torch.full((keys.numel() * block * block,), -1, dtype=torch.long, device=device)
    slot_edge[edge_slot] = torch.arange(edge_slot.numel(), device=device)
    mask = (slot_edge < 0).view(-1, 1, block, block)  # (N_t, 1, b, b): True where no edge
    sorted_slots = (slot_edge >= 0).nonzero().squeeze(1)  # (num_edges,) occupied slots, ascending
    edge_order = slot_edge[sorted_slots]  # (num_edges,) the edge in each
    rows_per_block = torch.bincount(tile_row, minlength=num_row_blocks).tolist()  # host: once per graph
    full_host, col_host = full.tolist(), tile_col.tolist()
    groups, t0, r0 = [], 0, 0
    per_tile = num_heads * block * block
    while r0 < num_row_blocks:
        r1, t1 = r0, t0
        while r1 < num_row_blocks and (t1 == t0 or (t1 + rows_per_block[r1] - t0) * per_tile <= max_elements):
            t1 += rows_per_block[r1]
            r1 += 1
        if t1 > t0:
            low, high = torch.searchsorted(sorted_slots, torch.tensor([t0, t1], device=device) * block * block).tolist()
            diagonal = col_host[t0:t1] == list(range(col_host[t0], col_host[t0] + t1 - t0))
            groups.append(TileGroup(t0, t1, r0, r1, tile_row[t0:t1] - r0, tile_col[t0:t1],
                                    col_host[t0] if diagonal else -1,
                                    None if all(full_host[t0:t1]) else mask[t0:t1],
                                    all(n == 1 for n in rows_per_block[r0:r1]),
                                    edge_order[low:high], sorted_slots[low:high] - t0 * block * block))
        t0, r0 = t1, r1
    return TilePlan(block, num_row_blocks, num_col_blocks, tile_row, tile_col, tuple(groups))


def tile_plan(graph: PreparedGraph, num_heads: int, head_dim: int) -> TilePlan | None:
    """The tiles of ``graph`` for these heads (planned once, kept on the graph), or ``None``: use chunks.

    ``None`` when an edge repeats or when the best tiles compute more than :data:`MAX_WASTE`
    entries per edge.
    """
    def build():
        if graph.num_edges == 0 or graph.has_duplicates:
            return None
        block, waste = choose_block(graph, num_heads, head_dim)
        return plan_tiles(graph, num_heads, block) if waste <= MAX_WASTE else None
    return graph.derived(("tiles", num_heads, MAX_WASTE, MAX_ELEMENTS), build)
