r"""Stacks of graph layers: encoder, decoder and the encoder-decoder Transformer.

Mirrors :class:`torch.nn.TransformerEncoder`, :class:`torch.nn.TransformerDecoder` and
:class:`torch.nn.Transformer` (same constructors, attribute names and ``state_dict``
keys).  "The encoder is composed of a stack of N = 6 identical layers"
(arXiv:1706.03762, section 3.1): here each layer passes messages on a graph, one edge
set for all layers or a list with one edge set per layer.

Layers are called through ``layer(...)`` (forward hooks fire as in torch).  The torch-style
call converts the masks into a graph once per call and hands it to every layer; the
graph-native call checks and prepares each distinct ``edge_index`` once
(:func:`~gnn_transformer.core.calls.prepare_edges`, for the cached sources too when
decoding incrementally) and the layers trust it.  Empty batches and zero-length sequences
give torch's shapes.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import xavier_uniform_

from ..errors import BatchMismatchError, FeatureSizeError
from .calls import is_graph_call, prepare_edges, source_count, with_weights
from .conversion import TorchCounterpart, _factory
from .dense import DenseLayout, mask_graph
from .layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer, decoder_graphs

__all__ = ["GraphTransformerEncoder", "GraphTransformerDecoder", "GraphTransformer"]


def per_layer(value: Any, num_layers: int, name: str) -> list:
    """One edge set (or bias) for every layer, or a list/tuple with exactly one per layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise ValueError(f"{name} is a list of {len(value)} entries but the stack has {num_layers} layers")
        return list(value)
    return [value] * num_layers


def _prepared_per_layer(edge_index, num_layers: int, name: str, num_sources: list[int], num_targets: int,
                        attention) -> list:
    """One prepared graph per layer (``num_sources`` per layer: cached nodes count); a plain edge tensor
    used by several layers is checked and prepared once."""
    memo: dict = {}
    return [prepare_edges(edges, sources, num_targets, attention, memo=memo)
            for edges, sources in zip(per_layer(edge_index, num_layers, name), num_sources)]


def _clones(layer: nn.Module, num_layers: int, expected: type, name: str) -> nn.ModuleList:
    if not isinstance(layer, expected):
        raise TypeError(f"{name} must be a {expected.__name__}, got {type(layer).__name__}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    return nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])


class _Stack(nn.Module, TorchCounterpart):
    """Shared conversion of stacks: the layer converts itself, the stack copies its norm."""

    layer_class: type

    @classmethod
    def from_torch(cls, module: nn.Module, **options):
        if not isinstance(module, cls.torch_class):
            raise TypeError(f"{cls.__name__}.from_torch expects a {cls.torch_class.__name__}, got {type(module).__name__}")
        layer = cls.layer_class.from_torch(module.layers[0], **options)
        graph = cls(layer, len(module.layers), copy.deepcopy(module.norm), **cls._stack_options(module))
        graph.load_state_dict(module.state_dict(), strict=True)
        return graph.train(module.training)

    def to_torch(self) -> nn.Module:
        module = self.torch_class(
            self.layers[0].to_torch(), len(self.layers), copy.deepcopy(self.norm), **self._stack_options(self)
        )
        module.load_state_dict(self.state_dict(), strict=True)
        return module.train(self.training)

    @staticmethod
    def _stack_options(module) -> dict:
        return {}


class GraphTransformerEncoder(_Stack):
    r"""A stack of :class:`GraphTransformerEncoderLayer`; mirrors :class:`torch.nn.TransformerEncoder`.

    Args:
        encoder_layer: the layer to copy ``num_layers`` times.
        num_layers: number of layers.
        norm: optional final normalisation (``nn.LayerNorm(d_model)`` in ``nn.Transformer``).
        enable_nested_tensor, mask_check: accepted for signature compatibility; no-ops
            here (a graph has no padding to pack, and masks are read exactly).

    Calls: graph-native ``forward(x, edge_index, edge_bias=None, return_attention_weights=False)``
    (``edge_index``/``edge_bias`` one for all layers or a list, one per layer; weights come
    back as a list, one (num_edges, H) tensor per layer), or torch's
    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)``.
    """

    torch_class = nn.TransformerEncoder
    layer_class = GraphTransformerEncoderLayer

    def __init__(self, encoder_layer: GraphTransformerEncoderLayer, num_layers: int, norm: nn.Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers, GraphTransformerEncoderLayer, "encoder_layer")
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    @staticmethod
    def _stack_options(module) -> dict:
        return dict(enable_nested_tensor=module.enable_nested_tensor, mask_check=module.mask_check)

    def forward(self, *args, **kwargs):
        """Graph-native call if ``edge_index`` is given, else torch's padded call (see class docs)."""
        if is_graph_call(args, kwargs, position=1, name="edge_index", mask_name="mask"):
            return self.forward_graph(*args, **kwargs)
        return self.forward_dense(*args, **kwargs)

    def forward_graph(self, x: Tensor, edge_index, edge_bias=None, return_attention_weights: bool = False, *,
                      position: Tensor | None = None, cache: list | None = None):
        """Node features x (N, d_model) through every layer, then the final norm.

        ``position`` (N,) feeds each attention's ``qk_transform``; ``cache`` holds one
        :class:`KeyValueCache` per layer for incremental decoding.
        """
        n = self.num_layers
        caches = per_layer(cache, n, "cache")
        num_sources = [source_count(layer_cache, x.size(0)) for layer_cache in caches]
        edges = _prepared_per_layer(edge_index, n, "edge_index", num_sources, x.size(0), self.layers[0].self_attn)
        weights = []
        for layer, layer_edges, layer_bias, layer_cache in zip(self.layers, edges, per_layer(edge_bias, n, "edge_bias"),
                                                               caches):
            x, layer_weights = with_weights(layer(x, edge_index=layer_edges, edge_bias=layer_bias,
                                                  return_attention_weights=return_attention_weights,
                                                  position=position, cache=layer_cache), return_attention_weights)
            weights.append(layer_weights)
        if self.norm is not None:
            x = self.norm(x)
        return (x, weights) if return_attention_weights else x

    def forward_dense(self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                      is_causal: bool | None = None) -> Tensor:
        """torch.nn.TransformerEncoder's call on padded tensors: the masks become one graph for all layers,
        which run in torch's padded layout."""
        attention = self.layers[0].self_attn
        layout = DenseLayout.of(src, attention.batch_first, "src")
        graph = mask_graph(mask, src_key_padding_mask, tgt=layout, src=layout, num_heads=attention.num_heads,
                           is_causal=bool(is_causal), dtype=src.dtype, mask_name="mask",
                           padding_name="src_key_padding_mask")
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, is_causal=bool(is_causal), src_key_padding_mask=src_key_padding_mask,
                      graph=graph)
        if self.norm is not None:
            x = self.norm(x)
        return x


class GraphTransformerDecoder(_Stack):
    r"""A stack of :class:`GraphTransformerDecoderLayer`; mirrors :class:`torch.nn.TransformerDecoder`.

    Calls: graph-native ``forward(x, memory, edge_index, cross_edge_index, edge_bias=None,
    cross_edge_bias=None, return_attention_weights=False)`` (each edge set one for all
    layers or a list, one per layer; weights as a list of ``{"self", "cross"}`` dicts), or
    torch's ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False)``.
    """

    torch_class = nn.TransformerDecoder
    layer_class = GraphTransformerDecoderLayer

    def __init__(self, decoder_layer: GraphTransformerDecoderLayer, num_layers: int,
                 norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers, GraphTransformerDecoderLayer, "decoder_layer")
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, *args, **kwargs):
        """Graph-native call if ``edge_index`` is given, else torch's padded call (see class docs)."""
        if is_graph_call(args, kwargs, position=2, name="edge_index", mask_name="tgt_mask"):
            return self.forward_graph(*args, **kwargs)
        return self.forward_dense(*args, **kwargs)

    def forward_graph(self, x: Tensor, memory: Tensor | None, edge_index, cross_edge_index, edge_bias=None,
                      cross_edge_bias=None, return_attention_weights: bool = False, *,
                      position: Tensor | None = None, memory_position: Tensor | None = None,
                      cache: list | None = None):
        """Target features x (T, d_model) attending to themselves and to ``memory`` (S, d_model).

        ``cache`` holds one ``{"self": KeyValueCache(), "cross": KeyValueCache(static=True)}``
        per layer for incremental decoding.
        """
        n = self.num_layers
        caches = per_layer(cache, n, "cache")
        num_targets, num_memory = x.size(0), 0 if memory is None else memory.size(0)
        self_caches = [None if c is None else c.get("self") for c in caches]
        cross_caches = [None if c is None else c.get("cross") for c in caches]
        edges = _prepared_per_layer(edge_index, n, "edge_index", [source_count(c, num_targets) for c in self_caches],
                                    num_targets, self.layers[0].self_attn)
        cross_edges = _prepared_per_layer(cross_edge_index, n, "cross_edge_index",
                                          [source_count(c, num_memory) for c in cross_caches], num_targets,
                                          self.layers[0].multihead_attn)
        graphs = zip(edges, cross_edges, per_layer(edge_bias, n, "edge_bias"),
                     per_layer(cross_edge_bias, n, "cross_edge_bias"), caches)
        weights = []
        for layer, (layer_edges, layer_cross_edges, bias, cross_bias, layer_cache) in zip(self.layers, graphs):
            x, layer_weights = with_weights(layer(
                x, memory, edge_index=layer_edges, cross_edge_index=layer_cross_edges, edge_bias=bias,
                cross_edge_bias=cross_bias, return_attention_weights=return_attention_weights, position=position,
                memory_position=memory_position, cache=layer_cache), return_attention_weights)
            weights.append(layer_weights)
        if self.norm is not None:
            x = self.norm(x)
        return (x, weights) if return_attention_weights else x

    def forward_dense(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                      memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                      memory_key_padding_mask: Tensor | None = None, tgt_is_causal: bool | None = None,
                      memory_is_causal: bool = False) -> Tensor:
        """torch.nn.TransformerDecoder's call on padded tensors: the masks become two graphs for all layers,
        which run in torch's padded layout."""
        graph, cross_graph = decoder_graphs(
            self.layers[0].self_attn, tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
            memory_key_padding_mask, bool(tgt_is_causal), bool(memory_is_causal),
        )
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=bool(tgt_is_causal),
                      memory_is_causal=memory_is_causal, graph=graph, cross_graph=cross_graph)
        if self.norm is not None:
            x = self.norm(x)
        return x


class GraphTransformer(nn.Module, TorchCounterpart):
    r"""The encoder-decoder Transformer on token graphs; mirrors :class:`torch.nn.Transformer`.

    The encoder passes messages on the source graph (complete in the paper), the decoder
    on the target graph (causal) and on the bipartite source -> target graph.

    Calls:

    * graph-native ``forward(src, tgt, src_edge_index, tgt_edge_index, cross_edge_index,
      src_edge_bias=None, tgt_edge_bias=None, cross_edge_bias=None,
      return_attention_weights=False)`` with src (S, d_model) and tgt (T, d_model) node
      features; returns (T, d_model) (and ``{"encoder": [...], "decoder": [...]}`` weights).
    * torch-style ``forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
      src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
      src_is_causal=None, tgt_is_causal=None, memory_is_causal=False)``.

    Args: as :class:`torch.nn.Transformer` (``custom_encoder``/``custom_decoder`` must be
    graph stacks), plus keyword-only ``backend``.
    """

    torch_class = nn.Transformer

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = F.relu,
        custom_encoder: GraphTransformerEncoder | None = None,
        custom_decoder: GraphTransformerDecoder | None = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        backend: str = "reference",
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first, norm_first,
                      bias)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = GraphTransformerEncoderLayer(*layer_args, backend=backend, **factory)
            norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
            self.encoder = GraphTransformerEncoder(layer, num_encoder_layers, norm)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = GraphTransformerDecoderLayer(*layer_args, backend=backend, **factory)
            norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
            self.decoder = GraphTransformerDecoder(layer, num_decoder_layers, norm)
        self._reset_parameters()
        self.d_model = d_model
        self.nhead = nhead
        self.batch_first = batch_first

    def _reset_parameters(self) -> None:
        """Xavier-uniform initialisation of every matrix, as torch.nn.Transformer does."""
        for parameter in self.parameters():
            if parameter.dim() > 1:
                xavier_uniform_(parameter)

    @classmethod
    def from_torch(cls, module: nn.Transformer, **options) -> "GraphTransformer":
        if not isinstance(module, nn.Transformer):
            raise TypeError(f"GraphTransformer.from_torch expects a torch.nn.Transformer, got {type(module).__name__}")
        graph = cls(
            d_model=module.d_model, nhead=module.nhead, batch_first=module.batch_first,
            custom_encoder=GraphTransformerEncoder.from_torch(module.encoder, **options),
            custom_decoder=GraphTransformerDecoder.from_torch(module.decoder, **options),
        )
        graph.load_state_dict(module.state_dict(), strict=True)
        return graph.train(module.training)

    def to_torch(self) -> nn.Transformer:
        module = nn.Transformer(
            d_model=self.d_model, nhead=self.nhead, batch_first=self.batch_first,
            custom_encoder=self.encoder.to_torch(), custom_decoder=self.decoder.to_torch(), **_factory(self),
        )
        module.load_state_dict(self.state_dict(), strict=True)
        return module.train(self.training)

    generate_square_subsequent_mask = staticmethod(nn.Transformer.generate_square_subsequent_mask)

    def forward(self, *args, **kwargs):
        """Graph-native call if ``src_edge_index`` is given, else torch's padded call (see class docs)."""
        if is_graph_call(args, kwargs, position=2, name="src_edge_index", mask_name="src_mask"):
            return self.forward_graph(*args, **kwargs)
        return self.forward_dense(*args, **kwargs)

    def forward_graph(self, src: Tensor, tgt: Tensor, src_edge_index, tgt_edge_index, cross_edge_index,
                      src_edge_bias=None, tgt_edge_bias=None, cross_edge_bias=None,
                      return_attention_weights: bool = False, *, src_position: Tensor | None = None,
                      tgt_position: Tensor | None = None):
        """Encode the source nodes, decode the target nodes; returns target features (T, d_model).

        ``src_position``/``tgt_position`` feed the attentions' ``qk_transform`` (if any).
        """
        memory, encoder_weights = with_weights(self.encoder(
            src, edge_index=src_edge_index, edge_bias=src_edge_bias, return_attention_weights=return_attention_weights,
            position=src_position), return_attention_weights)
        out, decoder_weights = with_weights(self.decoder(
            tgt, memory, edge_index=tgt_edge_index, cross_edge_index=cross_edge_index, edge_bias=tgt_edge_bias,
            cross_edge_bias=cross_edge_bias, return_attention_weights=return_attention_weights,
            position=tgt_position, memory_position=src_position), return_attention_weights)
        if return_attention_weights:
            return out, {"encoder": encoder_weights, "decoder": decoder_weights}
        return out

    def forward_dense(self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None,
                      memory_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                      tgt_key_padding_mask: Tensor | None = None, memory_key_padding_mask: Tensor | None = None,
                      src_is_causal: bool | None = None, tgt_is_causal: bool | None = None,
                      memory_is_causal: bool = False) -> Tensor:
        """torch.nn.Transformer's call on padded tensors."""
        if src.dim() != tgt.dim():
            raise BatchMismatchError(f"src is {src.dim()}-D but tgt is {tgt.dim()}-D: both batched (3-D) or both "
                                     f"unbatched (2-D)")
        batch_axis = 0 if self.batch_first else 1
        if src.dim() == 3 and src.size(batch_axis) != tgt.size(batch_axis):
            raise BatchMismatchError(
                f"the batch number of src and tgt must be equal, got {src.size(batch_axis)} and {tgt.size(batch_axis)}"
            )
        if src.size(-1) != self.d_model or tgt.size(-1) != self.d_model:
            raise FeatureSizeError(
                f"the feature number of src and tgt must be equal to d_model={self.d_model}, "
                f"got {src.size(-1)} and {tgt.size(-1)}"
            )
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)
