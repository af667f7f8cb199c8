r"""The dense adapter: torch's padded tensors and masks in, graphs out, and back.

The modules of this library compute on node features and edge sets.  Their
torch-style call (the signature of the ``torch.nn`` counterpart) goes through
this adapter:

1. a padded batch (L, B, F) or (B, L, F) (or unbatched (L, F)) becomes B * L
   nodes, node ``b * L + i`` for position ``i`` of sequence ``b``;
2. the masks become edges and per-edge biases (:func:`graphs.edges_from_mask`):
   an edge ``j -> i`` exists exactly where torch lets query ``i`` see key ``j``;
3. after the graph-native computation the nodes are put back in the padded layout.

A padded position therefore stays a node and a query (torch computes an
output for it too) but sends no edges: it is never a key.  Only attention needs
the graph: the torch-style calls of layers and stacks keep torch's padded layout
for everything per node (linear maps, norms, dropout act on any leading shape), so
that their submodules' hooks see torch's tensors.  A stack converts its masks once
(:func:`mask_graph`) and hands the :class:`MaskGraph` to every layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..backends.prepared import PreparedGraph
from ..backends.validation import check_module_input
from ..errors import BatchMismatchError, CausalHintError, FeatureSizeError, MaskShapeError, MaskTypeError, ShapeError
from ..graphs.masks import edges_from_mask


@dataclass(frozen=True)
class DenseLayout:
    """Where a padded tensor's B sequences of L positions sit, so nodes can go back."""

    batch_size: int
    length: int
    batch_first: bool
    batched: bool

    @classmethod
    def of(cls, x: Tensor, batch_first: bool, name: str) -> "DenseLayout":
        if x.dim() == 2:
            return cls(1, x.size(0), batch_first, batched=False)
        if x.dim() == 3:
            b, l = (x.size(0), x.size(1)) if batch_first else (x.size(1), x.size(0))
            return cls(b, l, batch_first, batched=True)
        raise ShapeError(
            f"{name} must be (L, F) unbatched, or (L, B, F) / (B, L, F) with batch_first, got {tuple(x.shape)}"
        )

    def to_nodes(self, x: Tensor) -> Tensor:
        """(L, B, F) / (B, L, F) / (L, F) -> (B * L, F), node b * L + i."""
        if not self.batched:
            return x
        if not self.batch_first:
            x = x.transpose(0, 1)
        return x.reshape(self.batch_size * self.length, x.size(-1))

    def to_dense(self, nodes: Tensor) -> Tensor:
        """Inverse of :meth:`to_nodes`."""
        if not self.batched:
            return nodes
        x = nodes.view(self.batch_size, self.length, nodes.size(-1))
        return x if self.batch_first else x.transpose(0, 1)


def _is_causal_mask(mask: Tensor) -> bool:
    """Whether ``mask`` is torch's causal mask: blocked exactly above the diagonal, no other bias."""
    rows, cols = mask.shape[-2:]
    above = torch.ones(rows, cols, dtype=torch.bool, device=mask.device).triu(1)
    if mask.dtype == torch.bool:
        return bool((mask == above).all())
    blocked = torch.isneginf(mask)
    return bool((blocked == above).all()) and bool((mask[..., ~above] == 0).all())


def dense_graph(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    *,
    tgt: DenseLayout,
    src: DenseLayout,
    num_heads: int,
    is_causal: bool,
    dtype: torch.dtype,
    mask_name: str = "attn_mask",
    padding_name: str = "key_padding_mask",
) -> tuple[Tensor, Tensor | None]:
    """Edges (and biases) of the attention torch computes under these masks.

    ``is_causal`` is torch's hint: it requires a mask (a ``RuntimeError`` in
    torch), and the mask must be the causal one (torch would silently follow the
    hint or the mask depending on its code path); both raise :class:`CausalHintError`.
    """
    if tgt.batched != src.batched:
        raise BatchMismatchError(
            f"the queries are {'batched (3-D)' if tgt.batched else 'unbatched (2-D)'} but the keys are "
            f"{'batched (3-D)' if src.batched else 'unbatched (2-D)'}: both must be batched or both unbatched"
        )
    if tgt.batch_size != src.batch_size:
        raise BatchMismatchError(f"queries have batch size {tgt.batch_size} but keys have {src.batch_size}")
    if is_causal:
        if attn_mask is None:
            raise CausalHintError(
                f"is_causal=True needs {mask_name} as well, as in torch: pass "
                "GraphTransformer.generate_square_subsequent_mask(L) (or drop the flag)"
            )
        if not _is_causal_mask(attn_mask):
            raise CausalHintError(
                f"is_causal=True was given, but {mask_name} is not causal; pass the causal "
                "mask (generate_square_subsequent_mask) or set is_causal=False"
            )
    for name, mask in ((mask_name, attn_mask), (padding_name, key_padding_mask)):
        if mask is not None and mask.dtype != torch.bool and not mask.dtype.is_floating_point:
            raise MaskTypeError(f"{name} must be a bool or floating-point tensor, got dtype {mask.dtype}")
    if key_padding_mask is not None and not src.batched:
        if key_padding_mask.dim() != 1:
            raise MaskShapeError(
                f"{padding_name} of an unbatched input must be 1-D (S,), got {tuple(key_padding_mask.shape)}"
            )
        key_padding_mask = key_padding_mask.unsqueeze(0)
    try:
        return edges_from_mask(
            attn_mask,
            key_padding_mask,
            batch_size=tgt.batch_size,
            tgt_len=tgt.length,
            src_len=src.length,
            num_heads=num_heads,
            dtype=dtype,
        )
    except ValueError as error:  # name the argument the user passed, keep the class
        message = str(error).replace("attn_mask", mask_name).replace("key_padding_mask", padding_name)
        raise type(error)(message) from None


def check_padded_features(x: Tensor, num_features: int, name: str) -> None:
    """The last axis of a padded input holds ``num_features`` features per token (:class:`FeatureSizeError`)."""
    if x.size(-1) != num_features:
        raise FeatureSizeError(f"{name} has {x.size(-1)} features per token but the module expects {num_features}")


class MaskGraph(NamedTuple):
    """torch's masks converted once: the edges (prepared for B * S sources and B * L targets) and
    their per-edge biases (``None`` without float masks).  Internal: stacks pass it to their layers,
    layers to their attentions (keyword ``graph``), so that no layer converts the masks again."""

    edge_index: PreparedGraph
    edge_bias: Tensor | None


def mask_graph(attn_mask: Tensor | None, key_padding_mask: Tensor | None, *, tgt: DenseLayout, src: DenseLayout,
               **options) -> MaskGraph:
    """:func:`dense_graph`, with the edges prepared (checked once) for the padded nodes of ``tgt`` and ``src``."""
    edge_index, edge_bias = dense_graph(attn_mask, key_padding_mask, tgt=tgt, src=src, **options)
    graph = PreparedGraph(edge_index, src.batch_size * src.length, tgt.batch_size * tgt.length)
    return MaskGraph(graph, edge_bias)


def dense_weights(
    weights: Tensor, target: Tensor, column: Tensor, tgt: DenseLayout, num_columns: int, average: bool
) -> Tensor:
    """Per-edge weights (num_edges, H) -> torch's (B, H, L, S), or (B, L, S) averaged over heads.

    ``target`` is each edge's target node (b * L + i) and ``column`` its key position in
    torch's weight matrix; positions without an edge get weight 0, as torch's softmax gives
    them.
    """
    dense = weights.new_zeros(tgt.batch_size, weights.size(1), tgt.length, num_columns)
    dense[target // tgt.length, :, target % tgt.length, column] = weights
    if average:
        dense = dense.mean(dim=1)
    return dense if tgt.batched else dense.squeeze(0)


def padded_attention(attention, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None,
                     need_weights: bool, attn_mask: Tensor | None, average_attn_weights: bool, is_causal: bool,
                     graph: MaskGraph | None) -> tuple[Tensor, Tensor | None]:
    """``torch.nn.MultiheadAttention``'s call on padded tensors, for a graph ``attention``: nodes in,
    the graph-native call of ``attention``, torch's padded output and (B, L, S) weights out."""
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        check_module_input(tensor, attention.out_proj.weight, name)  # floating, in the weights' dtype and device
    if query.dim() != key.dim() or key.dim() != value.dim():
        raise BatchMismatchError(
            f"query, key and value must all be batched (3-D) or all unbatched (2-D), got "
            f"{query.dim()}-D, {key.dim()}-D and {value.dim()}-D"
        )
    tgt = DenseLayout.of(query, attention.batch_first, "query")
    src = DenseLayout.of(key, attention.batch_first, "key")
    if DenseLayout.of(value, attention.batch_first, "value") != src:
        raise ShapeError(
            f"key {tuple(key.shape)} and value {tuple(value.shape)} must have the same batch and length"
        )
    if graph is None:
        graph = mask_graph(attn_mask, key_padding_mask, tgt=tgt, src=src, num_heads=attention.num_heads,
                           is_causal=is_causal, dtype=query.dtype)
    nodes = tgt.to_nodes(query)  # (B * L, E)
    keys = nodes if key is query else src.to_nodes(key)  # (B * S, kdim)
    values = keys if value is key else src.to_nodes(value)  # (B * S, vdim)
    result = attention.forward_graph(nodes, keys, values, graph.edge_index, graph.edge_bias,
                                     return_attention_weights=need_weights)  # its own graph-native call
    out, weights = result if need_weights else (result, None)
    out = tgt.to_dense(out)
    if not need_weights:
        return out, None
    full = attention.attention_graph(graph.edge_index.edge_index, src.batch_size * src.length,
                                     tgt.batch_size * tgt.length)
    source, target = full
    batch = target // tgt.length
    real = source < src.batch_size * src.length
    column = torch.where(real, source - batch * src.length, source - src.batch_size * src.length + src.length)
    num_columns = src.length + attention.num_virtual_sources()
    return out, dense_weights(weights, target, column, tgt, num_columns, average_attn_weights)
