r"""Encoder and decoder layers (arXiv:1706.03762, section 3.1) on token graphs.

Everything but attention acts on each node alone: add & norm
:math:`\text{LayerNorm}(x + \text{Sublayer}(x))` (or :math:`x + \text{Sublayer}(\text{LayerNorm}(x))`
with ``norm_first``) and the position-wise feed-forward network
:math:`\text{FFN}(x) = \max(0, x W_1 + b_1) W_2 + b_2`.  The graph decides who
attends to whom: the encoder layer runs self-attention on one edge set, the decoder
layer masked self-attention on a second and cross-attention on a bipartite third.

Attribute names (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``,
``norm1..3``, ``dropout``, ``dropout1..3``) are those of
:class:`torch.nn.TransformerEncoderLayer` / :class:`torch.nn.TransformerDecoderLayer`,
and every submodule is called through ``module(...)`` in torch's order, so forward hooks
and pre-hooks fire as in torch.  The torch-style call keeps torch's padded layout for the
per-node operations and calls its attentions torch-style (``(attn_output, None)``, as torch's
layers get), so hooks also see torch's tensors; the graph-native call passes node features
and the prepared graph down.  Empty batches and zero-length sequences give torch's shapes.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..backends.validation import check_module_input, check_node_features
from ..errors import ActivationError
from .attention import GraphMultiheadAttention, KeyValueCache
from .calls import is_graph_call, prepare_edges, source_count, with_weights
from .conversion import TorchCounterpart
from .dense import DenseLayout, MaskGraph, check_padded_features, mask_graph
from .norms import make_norm

__all__ = ["GraphTransformerEncoderLayer", "GraphTransformerDecoderLayer"]

Activation = str | Callable[[Tensor], Tensor]


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": partial(F.gelu, approximate="tanh"), "silu": F.silu}


def resolve_activation(activation: Activation) -> Callable[[Tensor], Tensor]:
    """``"relu"``/``"gelu"`` -> ``F.relu``/``F.gelu`` (as torch does), also ``"gelu_tanh"`` (GELU's tanh
    approximation, GPT-2's) and ``"silu"``; callables pass through."""
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ActivationError(f"activation should be 'relu', 'gelu' or a callable (or 'gelu_tanh', 'silu'), "
                             f"not {activation!r}")
        return ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(f"activation must be a string or a callable, got {type(activation).__name__}")
    return activation


def _attend(attention: GraphMultiheadAttention, query: Tensor, key: Tensor | None, edge_index, edge_bias,
            need_weights: bool, **kwargs) -> tuple[Tensor, Tensor | None]:
    """(output, weights) of a graph-native attention call through ``attention(...)`` (hooks fire);
    weights are ``None`` (not computed) unless needed."""
    result = attention(query, key, key, edge_index=edge_index, edge_bias=edge_bias,
                       return_attention_weights=need_weights, **kwargs)
    return with_weights(result, need_weights)


def _layer_config(module) -> dict:
    """Constructor arguments shared by torch's and this library's encoder and decoder layers."""
    return dict(
        d_model=module.self_attn.embed_dim,
        nhead=module.self_attn.num_heads,
        dim_feedforward=module.linear1.out_features,
        dropout=module.dropout.p,
        activation=module.activation,
        layer_norm_eps=module.norm1.eps,
        batch_first=module.self_attn.batch_first,
        norm_first=module.norm_first,
        bias=module.linear1.bias is not None,
    )


def _torch_layer_config(module) -> dict:
    """``_layer_config``, after checking that the layer uses no option torch's layers lack."""
    attention = module.self_attn
    extras = {
        "norm": not isinstance(module.norm1, nn.LayerNorm),
        "gated": module.linear_v is not None,
        "attention_scale": attention.scale is not None,
        "qk_transform": attention.qk_transform is not None,
        "head_dim": attention.num_heads * attention.head_dim != attention.embed_dim,
    }
    used = [name for name, on in extras.items() if on]
    if used:
        raise ValueError(f"this layer uses {used}, which torch.nn.Transformer*Layer does not have: "
                         f"no torch counterpart")
    return _layer_config(module)


def _feed_forward(layer: nn.Module, x: Tensor) -> Tensor:
    r"""The hidden layer of the feed-forward network: :math:`\text{act}(x W_1)`, or with a gate
    :math:`\text{act}(x W_1) \odot x V` (GLU variants, arXiv:2002.05202: SwiGLU, GEGLU, ReGLU)."""
    hidden = layer.activation(layer.linear1(x))  # (N, dim_feedforward)
    return hidden if layer.linear_v is None else hidden * layer.linear_v(x)


class _GraphLayer(nn.Module, TorchCounterpart):
    """What encoder and decoder layers share: torch's constructor, the attentions, the feed-forward
    network, the norms and dropouts (registered in torch's order), and the variant options.

    ``cross_attention`` (class attribute) adds ``multihead_attn`` and a third norm and dropout.
    """

    cross_attention: bool = False

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = F.relu,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        backend: str = "reference",
        norm: str | Callable[..., nn.Module] = "layer",
        gated: bool = False,
        attention_scale: float | None = None,
        qk_transform: nn.Module | None = None,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        attention = dict(dropout=dropout, batch_first=batch_first, bias=bias, backend=backend, **factory,
                         scale=attention_scale, head_dim=head_dim)
        self.self_attn = GraphMultiheadAttention(d_model, nhead, **attention, qk_transform=qk_transform)
        if self.cross_attention:
            self.multihead_attn = GraphMultiheadAttention(d_model, nhead, **attention)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        sublayers = 3 if self.cross_attention else 2
        for index in range(1, sublayers + 1):
            setattr(self, f"norm{index}", make_norm(norm, d_model, layer_norm_eps, bias, **factory))
        self.linear_v = nn.Linear(d_model, dim_feedforward, bias=bias, **factory) if gated else None
        for index in range(1, sublayers + 1):
            setattr(self, f"dropout{index}", nn.Dropout(dropout))
        self.activation = resolve_activation(activation)

    _config_of = staticmethod(_layer_config)
    _torch_config = _torch_layer_config

    def _ff_block(self, x: Tensor) -> Tensor:
        last_dropout = self.dropout3 if self.cross_attention else self.dropout2
        return last_dropout(self.linear2(self.dropout(_feed_forward(self, x))))

    def _sublayers(self, x: Tensor, *attentions: Callable[[Tensor], Tensor]) -> Tensor:
        """Add & norm around each attention block (``x -> dropout(attention(x))``) and the feed-forward
        network, in torch's order; x may have any leading shape (nodes, or torch's padded layout)."""
        blocks = (*attentions, self._ff_block)
        for index, block in enumerate(blocks, 1):
            norm = getattr(self, f"norm{index}")
            if self.norm_first:
                x = x + block(norm(x))
            else:
                x = norm(x + block(x))
        return x


class GraphTransformerEncoderLayer(_GraphLayer):
    r"""Self-attention and feed-forward on a token graph; mirrors :class:`torch.nn.TransformerEncoderLayer`.

    .. math::

        x \leftarrow \text{LN}_1\big(x + \text{MHA}_{G}(x)\big), \qquad
        x \leftarrow \text{LN}_2\big(x + \text{FFN}(x)\big)

    (``norm_first``: :math:`x \leftarrow x + \text{MHA}_G(\text{LN}_1(x))`, then
    :math:`x \leftarrow x + \text{FFN}(\text{LN}_2(x))`), with :math:`\text{MHA}_G`
    attention along the edges of ``G``: the complete graph in the paper's encoder.

    Calls:

    * graph-native ``forward(x, edge_index, edge_bias=None, return_attention_weights=False)``:
      x (N, d_model) node features; returns (N, d_model), plus the weights (num_edges, H)
      if requested.
    * torch-style ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``
      on padded tensors, as :class:`torch.nn.TransformerEncoderLayer`.

    Args: as :class:`torch.nn.TransformerEncoderLayer`, plus keyword-only options (defaults: torch's layer):
        backend: attention backend.
        norm: ``"layer"`` (LayerNorm), ``"rms"`` (RMSNorm) or a callable building the norm modules.
        gated: gated feed-forward :math:`(\text{act}(x W_1) \odot x V) W_2` with ``linear_v`` = V
            (``activation="silu"``: SwiGLU, ``"gelu"``: GEGLU, ``"relu"``: ReGLU).
        attention_scale, qk_transform, head_dim: the self-attention's ``scale``, ``qk_transform``
            (rotary positions) and ``head_dim`` (see :class:`GraphMultiheadAttention`).
    """

    torch_class = nn.TransformerEncoderLayer

    def forward(self, *args, **kwargs):
        """Graph-native call if ``edge_index`` is given, else torch's padded call (see class docs)."""
        if is_graph_call(args, kwargs, position=1, name="edge_index", mask_name="src_mask"):
            return self.forward_graph(*args, **kwargs)
        return self.forward_dense(*args, **kwargs)

    def forward_graph(self, x: Tensor, edge_index: Tensor, edge_bias: Tensor | None = None,
                      return_attention_weights: bool = False, *, position: Tensor | None = None,
                      cache: KeyValueCache | None = None):
        """One encoder layer on node features x (N, d_model) along ``edge_index``.

        ``position`` (N,) feeds the attention's ``qk_transform`` (if any); with a ``cache``, x holds
        only new nodes and ``edge_index`` sources index every cached node (incremental decoding).
        """
        check_module_input(x, self.self_attn.out_proj.weight, "x")
        check_node_features(x, self.self_attn.embed_dim, "x")
        edge_index = prepare_edges(edge_index, source_count(cache, x.size(0)), x.size(0), self.self_attn)
        weights = []

        def self_attention(h: Tensor) -> Tensor:
            out, layer_weights = _attend(self.self_attn, h, h, edge_index, edge_bias, return_attention_weights,
                                         query_position=position, key_position=position, cache=cache)
            weights.append(layer_weights)
            return self.dropout1(out)

        x = self._sublayers(x, self_attention)
        return (x, weights[0]) if return_attention_weights else x

    def forward_dense(self, src: Tensor, src_mask: Tensor | None = None,
                      src_key_padding_mask: Tensor | None = None, is_causal: bool = False, *,
                      graph: MaskGraph | None = None) -> Tensor:
        """torch.nn.TransformerEncoderLayer's call on padded tensors, in torch's padded layout.

        ``graph`` (internal): the masks already converted by the stack, read instead of the masks.
        """
        check_module_input(src, self.self_attn.out_proj.weight, "src")
        check_padded_features(src, self.self_attn.embed_dim, "src")
        if graph is None:
            layout = DenseLayout.of(src, self.self_attn.batch_first, "src")
            graph = mask_graph(src_mask, src_key_padding_mask, tgt=layout, src=layout,
                               num_heads=self.self_attn.num_heads, is_causal=is_causal, dtype=src.dtype,
                               mask_name="src_mask", padding_name="src_key_padding_mask")

        def self_attention(x: Tensor) -> Tensor:
            out = self.self_attn(x, x, x, attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
                                 need_weights=False, is_causal=is_causal, graph=graph)[0]
            return self.dropout1(out)

        return self._sublayers(src, self_attention)


class GraphTransformerDecoderLayer(_GraphLayer):
    r"""Masked self-attention, cross-attention and feed-forward; mirrors :class:`torch.nn.TransformerDecoderLayer`.

    .. math::

        x \leftarrow \text{LN}_1\big(x + \text{MHA}_{G_\text{self}}(x)\big), \quad
        x \leftarrow \text{LN}_2\big(x + \text{MHA}_{G_\text{cross}}(x, m)\big), \quad
        x \leftarrow \text{LN}_3\big(x + \text{FFN}(x)\big)

    where :math:`m` is the encoder output (memory), :math:`G_\text{self}` the causal graph
    of the targets and :math:`G_\text{cross}` the bipartite graph from source tokens
    (row 0) to target tokens (row 1) in the paper's decoder.

    Calls:

    * graph-native ``forward(x, memory, edge_index, cross_edge_index, edge_bias=None,
      cross_edge_bias=None, return_attention_weights=False)``; the weights come back as
      ``{"self": (E_self, H), "cross": (E_cross, H)}``.
    * torch-style ``forward(tgt, memory, tgt_mask=None, memory_mask=None,
      tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=False,
      memory_is_causal=False)`` on padded tensors.

    Args: as :class:`torch.nn.TransformerDecoderLayer`, plus the keyword-only options of
    :class:`GraphTransformerEncoderLayer` (``qk_transform`` goes to the self-attention only;
    ``attention_scale`` and ``head_dim`` to both attentions).
    """

    torch_class = nn.TransformerDecoderLayer
    cross_attention = True

    def forward(self, *args, **kwargs):
        """Graph-native call if ``edge_index`` is given, else torch's padded call (see class docs)."""
        if is_graph_call(args, kwargs, position=2, name="edge_index", mask_name="tgt_mask"):
            return self.forward_graph(*args, **kwargs)
        return self.forward_dense(*args, **kwargs)

    def forward_graph(self, x: Tensor, memory: Tensor | None, edge_index: Tensor, cross_edge_index: Tensor,
                      edge_bias: Tensor | None = None, cross_edge_bias: Tensor | None = None,
                      return_attention_weights: bool = False, *, position: Tensor | None = None,
                      memory_position: Tensor | None = None, cache: dict | None = None):
        """One decoder layer: x (T, d_model) targets, memory (S, d_model) sources.

        ``position``/``memory_position`` feed the attentions' ``qk_transform`` (if any);
        ``cache = {"self": KeyValueCache(), "cross": KeyValueCache(static=True)}`` decodes
        incrementally (x holds only the new target nodes; memory may be ``None`` once the
        static cross-attention cache is filled).
        """
        check_module_input(x, self.self_attn.out_proj.weight, "x")
        check_node_features(x, self.self_attn.embed_dim, "x")
        cache = cache or {}
        self_cache, cross_cache = cache.get("self"), cache.get("cross")
        if memory is not None:
            check_module_input(memory, self.self_attn.out_proj.weight, "memory")
            check_node_features(memory, self.self_attn.embed_dim, "memory")
        elif not (cross_cache is not None and cross_cache.static and cross_cache.filled):
            raise ValueError("memory is None: pass the encoder output (memory may be None only with a filled "
                             "static cross-attention cache)")
        num_memory = 0 if memory is None else memory.size(0)
        edge_index = prepare_edges(edge_index, source_count(self_cache, x.size(0)), x.size(0), self.self_attn)
        cross_edge_index = prepare_edges(cross_edge_index, source_count(cross_cache, num_memory), x.size(0),
                                         self.multihead_attn)
        weights = {}

        def self_attention(h: Tensor) -> Tensor:
            out, weights["self"] = _attend(self.self_attn, h, h, edge_index, edge_bias, return_attention_weights,
                                           query_position=position, key_position=position, cache=self_cache)
            return self.dropout1(out)

        def cross_attention(h: Tensor) -> Tensor:
            out, weights["cross"] = _attend(self.multihead_attn, h, memory, cross_edge_index, cross_edge_bias,
                                            return_attention_weights, query_position=position,
                                            key_position=memory_position, cache=cross_cache)
            return self.dropout2(out)

        x = self._sublayers(x, self_attention, cross_attention)
        if return_attention_weights:
            return x, {"self": weights["self"], "cross": weights["cross"]}
        return x

    def forward_dense(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                      memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                      memory_key_padding_mask: Tensor | None = None, tgt_is_causal: bool = False,
                      memory_is_causal: bool = False, *, graph: MaskGraph | None = None,
                      cross_graph: MaskGraph | None = None) -> Tensor:
        """torch.nn.TransformerDecoderLayer's call on padded tensors, in torch's padded layout.

        ``graph``/``cross_graph`` (internal): the masks already converted by the stack.
        """
        check_module_input(tgt, self.self_attn.out_proj.weight, "tgt")
        check_padded_features(tgt, self.self_attn.embed_dim, "tgt")
        check_module_input(memory, self.self_attn.out_proj.weight, "memory")
        check_padded_features(memory, self.self_attn.embed_dim, "memory")
        if graph is None or cross_graph is None:
            graph, cross_graph = decoder_graphs(
                self.self_attn, tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                memory_key_padding_mask, bool(tgt_is_causal), bool(memory_is_causal),
            )

        def self_attention(x: Tensor) -> Tensor:
            out = self.self_attn(x, x, x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask,
                                 need_weights=False, is_causal=tgt_is_causal, graph=graph)[0]
            return self.dropout1(out)

        def cross_attention(x: Tensor) -> Tensor:
            out = self.multihead_attn(x, memory, memory, attn_mask=memory_mask,
                                      key_padding_mask=memory_key_padding_mask, need_weights=False,
                                      is_causal=memory_is_causal, graph=cross_graph)[0]
            return self.dropout2(out)

        return self._sublayers(tgt, self_attention, cross_attention)


def decoder_graphs(attention: GraphMultiheadAttention, tgt, memory, tgt_mask, memory_mask,
                   tgt_key_padding_mask, memory_key_padding_mask, tgt_is_causal, memory_is_causal
                   ) -> tuple[MaskGraph, MaskGraph]:
    """The decoder's two graphs from torch's masks, converted once: (self-attention's, cross-attention's)."""
    tgt_layout = DenseLayout.of(tgt, attention.batch_first, "tgt")
    mem_layout = DenseLayout.of(memory, attention.batch_first, "memory")
    common = dict(num_heads=attention.num_heads, dtype=tgt.dtype)
    graph = mask_graph(
        tgt_mask, tgt_key_padding_mask, tgt=tgt_layout, src=tgt_layout, is_causal=tgt_is_causal,
        mask_name="tgt_mask", padding_name="tgt_key_padding_mask", **common,
    )
    cross_graph = mask_graph(
        memory_mask, memory_key_padding_mask, tgt=tgt_layout, src=mem_layout, is_causal=memory_is_causal,
        mask_name="memory_mask", padding_name="memory_key_padding_mask", **common,
    )
    return graph, cross_graph
