r"""Multi-head attention as a PyG ``MessagePassing`` layer with ``torch.nn.MultiheadAttention``'s weights."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import constant_, xavier_normal_, xavier_uniform_
from torch.utils.hooks import RemovableHandle
from torch_geometric.utils import scatter

from ..backends import GraphAttentionPropagation, check_backend, run_backend
from ..backends.prepared import PreparedGraph
from ..backends.validation import (check_divisible, check_edge_bias, check_edge_index, check_module_input,
                                   check_node_features, check_probability, check_scale)
from .attention_parts import AttentionTensors, KeyValueCache, with_virtual_edges, with_virtual_sources
from .calls import is_graph_call, prepare_edges
from .conversion import TorchCounterpart
from .dense import MaskGraph, padded_attention

__all__ = ["GraphMultiheadAttention", "KeyValueCache", "AttentionTensors"]


def _is_distributed(graph) -> bool:
    """Whether ``graph`` is a :class:`~gnn_transformer.backends.distributed.DistributedGraph` (this rank's
    share of a graph split across processes); asked of the object, so nothing distributed is imported."""
    return getattr(graph, "splits_across_processes", False) is True


class GraphMultiheadAttention(GraphAttentionPropagation, TorchCounterpart):
    r"""Multi-head attention over the edges of a token graph (arXiv:1706.03762, section 3.2.2).

    .. math::

        \text{MultiHead}(Q, K, V)_i = \text{Concat}(o_i^1, \dots, o_i^H) W^O, \qquad
        o_i^h = \sum_{j \to i} \operatorname{softmax}_{j \to i}\big(
            \text{scale}\,\langle x_i W_h^Q, x_j W_h^K \rangle + b_{ij}^h \big)\, x_j W_h^V

    where the softmax runs over the incoming edges of target ``i`` only.  The
    constructor and the parameters are those of :class:`torch.nn.MultiheadAttention`
    (``in_proj_weight`` (3E, E) split into q, k, v row blocks, or ``q/k/v_proj_weight``
    when ``kdim``/``vdim`` differ, ``in_proj_bias``, ``out_proj``, ``bias_k``/``bias_v``),
    so ``load_state_dict(torch_mha.state_dict(), strict=True)`` converts either way.

    ``add_bias_kv`` and ``add_zero_attn`` are extra *virtual source nodes*: one with key
    ``bias_k`` and value ``bias_v``, one with zero key and value, each with an edge
    (bias 0) into every target, appended after the real edges in that order.

    Two calls:

    * graph-native: ``forward(query, key, value, edge_index, edge_bias=None,
      return_attention_weights=False)`` with node features query (T, E), key (S, kdim),
      value (S, vdim) and edges ``j -> i`` (row 0 sources, row 1 targets).  Returns the
      output (T, E), and with ``return_attention_weights`` also the weights
      (num_edges, H) per edge and head (virtual edges appended last).
    * torch-style: ``forward(query, key, value, key_padding_mask=None, need_weights=True,
      attn_mask=None, average_attn_weights=True, is_causal=False)`` with padded tensors,
      returning ``(attn_output, attn_weights)`` exactly as torch does.

    The call is graph-native when ``edge_index`` is given (by keyword or as the fourth
    positional argument, an integer tensor or a prepared graph).  A plain ``edge_index`` is
    checked once, where it enters; a :class:`~gnn_transformer.backends.prepared.PreparedGraph`
    (what layers and stacks hand down) is trusted, and the call never synchronises with the host.

    Hooks fire as in torch: layers and stacks call this module through ``module(...)`` in both
    calls, and ``out_proj``'s parameters are applied functionally, as torch's attention applies
    them (its hooks fire in neither).  The per-edge tensors (q, k, v, edges, bias, weights,
    aggregated heads) are observed with :meth:`register_attention_hook`.

    Empty inputs give torch's shapes: an empty batch, zero-length queries or keys, zero targets
    or no edges at all (each target then gets out_proj's bias, as torch computes with no key).

    Args:
        embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim,
        batch_first, device, dtype: as in :class:`torch.nn.MultiheadAttention`.
        scale: score scale (default ``1 / sqrt(head_dim)``); keyword only.
        backend: attention backend, keyword only: ``"reference"`` (PyG message passing, the
            default), ``"chunked"``, ``"fused"`` or ``"auto"`` (see :mod:`gnn_transformer.core.functional`).
        qk_transform: a module applied per node to queries and keys before message passing,
            as ``qk_transform(x (N, H, C), position (N,))`` (rotary positions are one); the
            graph-native call then needs ``query_position`` and ``key_position``.
        head_dim: size C of each head (default ``embed_dim // num_heads``); keyword only.  With
            ``H * C != embed_dim`` (T5 v1.1, for one) the projections map ``embed_dim`` to
            ``H * C`` and ``out_proj`` maps ``H * C`` back; there is no torch counterpart then.

    Shapes:
        - query: (T, E); key: (S, kdim); value: (S, vdim); edge_index: (2, num_edges);
          edge_bias: (num_edges, H) or (num_edges, 1).
        - output: (T, E); weights: (num_edges, H).

    Differences from torch: a query with no incoming edge (a fully masked row) gets
    a zero attention output before ``out_proj``, as torch's ``nn.Transformer*`` layers
    compute; ``nn.MultiheadAttention(need_weights=True)`` returns NaN there, and this
    module returns zero weights and outputs instead.

    Examples::

        >>> import torch
        >>> from gnn_transformer import GraphMultiheadAttention, graphs
        >>> mha = GraphMultiheadAttention(16, 4)
        >>> x = torch.randn(5, 16)                       # 5 tokens, one sequence
        >>> out = mha(x, x, x, graphs.complete([5]))     # graph-native
        >>> out.shape
        torch.Size([5, 16])
    """

    torch_class = nn.MultiheadAttention

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        *,
        scale: float | None = None,
        backend: str = "reference",
        qk_transform: nn.Module | None = None,
        head_dim: int | None = None,
    ) -> None:
        if head_dim is None:
            check_divisible(embed_dim, num_heads)
        elif head_dim <= 0 or num_heads <= 0:
            raise ValueError(f"head_dim and num_heads must be positive, got {head_dim} and {num_heads}")
        check_backend(backend)
        dropout = check_probability(dropout, "dropout", closed=True)  # torch's nn.Dropout allows 1
        scale = check_scale(scale)
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads if head_dim is None else head_dim
        inner = num_heads * self.head_dim  # H * C, embed_dim unless head_dim says otherwise
        self.scale = scale
        self.backend = backend
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(inner, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(inner, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(inner, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * inner, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, inner, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, inner, **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self.qk_transform = qk_transform
        self._attention_hooks: OrderedDict[int, Callable] = OrderedDict()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as torch.nn.MultiheadAttention's ``_reset_parameters`` does, draw for draw.

        Xavier-uniform projections, zero biases, Xavier-normal ``bias_k``/``bias_v``.  Like torch,
        this leaves ``out_proj.weight`` alone: it keeps the draw of ``nn.Linear``'s constructor,
        so that under the same seed this module and torch's hold the same parameters and leave
        the random number generator in the same state.
        """
        if self._qkv_same_embed_dim:
            xavier_uniform_(self.in_proj_weight)
        else:
            xavier_uniform_(self.q_proj_weight)
            xavier_uniform_(self.k_proj_weight)
            xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            constant_(self.in_proj_bias, 0.0)
            constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            xavier_normal_(self.bias_k)
            xavier_normal_(self.bias_v)

    def _reset_parameters(self) -> None:
        """torch's name for :meth:`reset_parameters`."""
        self.reset_parameters()

    @staticmethod
    def _config_of(module) -> dict:
        return dict(
            embed_dim=module.embed_dim,
            num_heads=module.num_heads,
            dropout=module.dropout,
            bias=module.in_proj_bias is not None,
            add_bias_kv=module.bias_k is not None,
            add_zero_attn=module.add_zero_attn,
            kdim=module.kdim,
            vdim=module.vdim,
            batch_first=module.batch_first,
        )

    def _torch_config(self) -> dict:
        if self.num_heads * self.head_dim != self.embed_dim:
            raise ValueError(f"head_dim={self.head_dim} gives {self.num_heads} x {self.head_dim} != embed_dim="
                             f"{self.embed_dim}: torch.nn.MultiheadAttention cannot hold these weights")
        if self.qk_transform is not None or (self.scale is not None and self.scale != self.head_dim ** -0.5):
            raise ValueError("this attention uses a qk_transform or a non-default scale, which "
                             "torch.nn.MultiheadAttention does not have: no torch counterpart")
        return self._config_of(self)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, backend={self.backend!r}"

    def __repr__(self) -> str:  # MessagePassing's repr hides the submodules
        return nn.Module.__repr__(self)

    # ------------------------------------------------------------------ projections
    def _weights(self) -> tuple[tuple[Tensor, Tensor, Tensor], tuple]:
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight.chunk(3)
        else:
            w = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        return w, b

    def project_query(self, query: Tensor, position: Tensor | None = None) -> Tensor:
        """Target features (T, E) -> per-head queries (T, H, C), with ``qk_transform`` applied."""
        (w_q, _, _), (b_q, _, _) = self._weights()
        q = nn.functional.linear(query, w_q, b_q).unflatten(-1, (self.num_heads, self.head_dim))
        return self._transform(q, position, "query_position")

    def project_key_value(self, key: Tensor, value: Tensor, position: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Source features (S, kdim), (S, vdim) -> per-head keys and values (S, H, C)."""
        (_, w_k, w_v), (_, b_k, b_v) = self._weights()
        shape = (self.num_heads, self.head_dim)
        k = nn.functional.linear(key, w_k, b_k).unflatten(-1, shape)  # (S, H, C)
        v = nn.functional.linear(value, w_v, b_v).unflatten(-1, shape)  # (S, H, C)
        return self._transform(k, position, "key_position"), v

    def _project_packed(self, x: Tensor, query_position: Tensor | None, key_position: Tensor | None):
        """Self-attention's q, k, v (N, H, C) from one product with the packed ``in_proj_weight``."""
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)  # (N, 3 * H * C)
        q, k, v = qkv.unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)  # each (N, H, C)
        return self._transform(q, query_position, "query_position"), self._transform(k, key_position, "key_position"), v

    def _transform(self, x: Tensor, position: Tensor | None, name: str) -> Tensor:
        if self.qk_transform is None:
            return x
        if position is None:
            raise ValueError(f"this attention has a qk_transform ({type(self.qk_transform).__name__}), "
                             f"which needs {name}: the position of every node")
        return self.qk_transform(x, position)

    def num_virtual_sources(self) -> int:
        """How many virtual source nodes ``add_bias_kv`` and ``add_zero_attn`` add (0, 1 or 2)."""
        return int(self.bias_k is not None) + int(self.add_zero_attn)

    def attention_graph(self, edge_index: Tensor, num_sources: int, num_targets: int) -> Tensor:
        """The edges attention really runs on: ``edge_index`` plus the virtual sources' edges."""
        return with_virtual_edges(edge_index, num_sources, num_targets, self.num_virtual_sources())

    def _add_virtual_sources(self, k: Tensor, v: Tensor, edge_index: Tensor | PreparedGraph, edge_bias: Tensor | None,
                             num_targets: int):
        """k, v (S + V, H, C) with the V virtual sources appended, the graph with their edges into every
        target, and the bias (num_edges, H or 1) padded with zeros for those edges."""
        num_sources = k.size(0)
        k, v = with_virtual_sources(k, v, self.bias_k, self.bias_v, self.add_zero_attn)  # (S + V, H, C)
        extra = k.size(0) - num_sources
        if extra == 0:
            return k, v, edge_index, edge_bias
        edges = getattr(edge_index, "edge_index", edge_index)  # (2, num_edges)
        if isinstance(edge_index, PreparedGraph) and self.backend != "reference":
            graph = edge_index  # the fast backends' layouts of the full graph: built once, kept on the graph
            full = graph.derived(("virtual_sources", extra), lambda: PreparedGraph(
                self.attention_graph(edges, num_sources, num_targets), num_sources + extra, num_targets,
                block_size=graph.block_size).prepare(self.backend, self.num_heads, self.head_dim))
        else:  # the reference backend runs on the plain edges
            full = self.attention_graph(edges, num_sources, num_targets)  # (2, num_edges + V * T)
        if edge_bias is not None:
            pad = edge_bias.new_zeros(extra * num_targets, edge_bias.size(1))
            edge_bias = torch.cat([edge_bias, pad])  # (num_edges + V * T, H or 1)
        return k, v, full, edge_bias

    # ------------------------------------------------------------------ hooks
    def register_attention_hook(self, hook: Callable[["GraphMultiheadAttention", "AttentionTensors"], None]
                                ) -> RemovableHandle:
        """Observe the per-edge tensors of every attention this module computes.

        After each call (graph-native or torch-style), ``hook(module, tensors)`` receives an
        :class:`AttentionTensors`: the projected q, k, v, the edges attention really ran on
        (the virtual sources of ``add_bias_kv``/``add_zero_attn`` included, numbered after the
        real sources), the per-edge bias, the scale, the weights, the aggregated heads and the
        output after ``out_proj``, all in the node numbering of the call (a torch-style call's
        padded positions are nodes ``b * L + i``).  Its return value is ignored.

        The hook observes; it switches nothing on.  The weights are those the backend computed:
        the ``"reference"`` backend always computes them, the fast backends only when the call
        asks for weights (``None`` otherwise); set ``module.backend = "reference"`` to see every
        weight (as :func:`gnn_transformer.analysis.recording.record` does).

        Returns:
            a handle whose ``remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._attention_hooks)
        self._attention_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ calls
    def forward(self, *args, **kwargs):
        """Graph-native call if ``edge_index`` is given, else torch's padded call (see class docs)."""
        if is_graph_call(args, kwargs, position=3, name="edge_index", mask_name="key_padding_mask"):
            return self.forward_graph(*args, **kwargs)
        return self.forward_dense(*args, **kwargs)

    def forward_graph(
        self,
        query: Tensor,
        key: Tensor | None,
        value: Tensor | None,
        edge_index: Tensor | PreparedGraph,
        edge_bias: Tensor | None = None,
        return_attention_weights: bool = False,
        *,
        query_position: Tensor | None = None,
        key_position: Tensor | None = None,
        cache: "KeyValueCache | None" = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attention of targets ``query`` (T, E) over sources ``key``/``value`` along ``edge_index``.

        With a :class:`KeyValueCache`, ``key``/``value`` are only the *new* source nodes: their
        projections are appended to the cache and ``edge_index`` indexes all cached sources
        (a static cache, once filled, is used as it is and ``key``/``value`` may be ``None``).
        A plain ``edge_index`` is checked here and prepared; a
        :class:`~gnn_transformer.backends.prepared.PreparedGraph` (for T targets and all S sources,
        which the fast backends reuse) is trusted: only its node counts are compared.  Weights are
        computed only when asked for (the reference backend always has them).
        """
        check_module_input(query, self.out_proj.weight, "query")
        check_node_features(query, self.embed_dim, "query")
        q = None
        if cache is not None and cache.static and cache.filled:
            k, v = cache.key, cache.value
        else:
            check_module_input(key, self.out_proj.weight, "key")
            check_node_features(key, self.kdim, "key")
            check_module_input(value, self.out_proj.weight, "value")
            check_node_features(value, self.vdim, "value")
            if key.size(0) != value.size(0):
                raise ValueError(f"key has {key.size(0)} source tokens but value has {value.size(0)}")
            if query is key and key is value and self._qkv_same_embed_dim:  # self-attention: one matmul
                q, k, v = self._project_packed(query, query_position, key_position)
            else:
                k, v = self.project_key_value(key, value, key_position)
            if cache is not None:
                k, v = cache.append(k, v)
        if _is_distributed(edge_index):  # this rank's share of a graph split across processes
            return self._attend_distributed(q if q is not None else self.project_query(query, query_position), k, v,
                                            edge_index, edge_bias, return_attention_weights, cache)
        edge_index = prepare_edges(edge_index, k.size(0), query.size(0), self)  # checks a plain edge index, once
        check_edge_index(edge_index, num_sources=k.size(0), num_targets=query.size(0))  # prepared: counts only
        if q is None:
            q = self.project_query(query, query_position)
        out, weights = self.attend_projected(q, k, v, edge_index, edge_bias, need_weights=return_attention_weights)
        return (out, weights) if return_attention_weights else out

    def _attend_distributed(self, q, k, v, graph, edge_bias, need_weights, cache) -> Tensor:
        """Attention of this rank's targets on a ``DistributedGraph`` (backends/distributed), then ``out_proj``."""
        from ..backends.distributed import distributed_graph_attention

        if edge_bias is not None or need_weights or cache is not None or self.num_virtual_sources() \
                or (self.training and self.dropout > 0.0):
            raise ValueError("attention on a DistributedGraph supports no edge_bias, attention weights, cache, "
                             "bias_k/add_zero_attn or dropout (use eval() or dropout=0.0)")
        out = distributed_graph_attention(q, k, v, graph, self._scale(), backend=self.backend)  # (T_r, H, C)
        return F.linear(out.flatten(1), self.out_proj.weight, self.out_proj.bias)  # (T_r, E)

    def attend_projected(self, q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor | PreparedGraph,
                         edge_bias: Tensor | None = None, need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """Attention on projected q (T, H, C), k, v (S, H, C), then ``out_proj``: (T, E) and weights.

        The weights (num_edges, H) are ``None`` unless ``need_weights`` (the fast backends
        compute them in an extra pass).  ``out_proj``'s parameters are applied functionally, as
        torch's ``MultiheadAttention`` does (its hooks do not fire there either).
        """
        num_targets = q.size(0)
        edge_bias = check_edge_bias(edge_bias, getattr(edge_index, "edge_index", edge_index).size(1), self.num_heads,
                                    q.dtype)  # (num_edges, H or 1): shapes only
        k, v, edge_index, edge_bias = self._add_virtual_sources(k, v, edge_index, edge_bias, num_targets)
        edges = getattr(edge_index, "edge_index", edge_index)  # a prepared graph's edge index
        dropout_p = self.dropout if self.training else 0.0
        scale = self._scale()
        if self.backend == "reference":  # this module's own propagate
            out, weights = self.attend(q, k, v, edges, edge_bias, scale, dropout_p)
        else:
            out, weights = run_backend(q, k, v, edge_index, edge_bias, scale, dropout_p, self.backend, need_weights)
        output = F.linear(out.flatten(1), self.out_proj.weight, self.out_proj.bias)  # (T, E)
        if self._attention_hooks:
            tensors = AttentionTensors(q, k, v, edges, edge_bias, scale, weights, out, output)
            for hook in list(self._attention_hooks.values()):
                hook(self, tensors)
        return output, (weights if need_weights else None)  # (T, E), (num_edges, H)

    def aggregate(self, inputs: Tensor, index: Tensor, ptr: Tensor | None = None,
                  dim_size: int | None = None) -> Tensor:
        """The ``"sum"`` aggregation of the messages at each target, (T, H, Cv).

        Computed with ``scatter`` here rather than through PyG's ``aggr_module(...)``, so that
        attention makes no module call that torch's ``MultiheadAttention`` does not make (hooks on
        the module tree fire as in torch); the sum is the same.
        """
        return scatter(inputs, index, self.node_dim, dim_size, reduce="sum")

    def _scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim) if self.scale is None else float(self.scale)

    def forward_dense(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        *,
        graph: MaskGraph | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """torch.nn.MultiheadAttention's call on padded tensors; see the class docs.

        ``graph`` (internal) is the masks already converted by the calling layer or stack
        (:func:`~gnn_transformer.core.dense.mask_graph`); the masks are then not read again.
        """
        return padded_attention(self, query, key, value, key_padding_mask, need_weights, attn_mask,
                                average_attn_weights, is_causal, graph)
