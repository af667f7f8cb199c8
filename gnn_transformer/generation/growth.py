r"""Incremental decoding as graph growth: the hypotheses of a search are paths in a prefix tree.

In the graph view, decoding one more token adds one node to the target graph, with

* causal edges :math:`j \to t` from every node :math:`j` on its path (its ancestors and itself),
* cross-attention edges :math:`s \to t` from every source token :math:`s` of its pair,

and only the new node's messages are computed: the keys and values of all earlier nodes
sit in a :class:`~gnn_transformer.core.attention.KeyValueCache` per layer, which grows by the
new nodes (self-attention) or was filled once from the encoder's memory (cross-attention).

Beam search keeps several hypotheses per pair and reorders them every step.  Here each
hypothesis is the path from a root to a leaf of a *prefix tree* of token nodes: a new
hypothesis is a new leaf whose edges come from its ancestors, so reordering beams only
re-indexes a small matrix of node ids (``path``) and never copies a cache.  Pruned
branches stay in the tree (their nodes are just never attended to again).

The model is asked only through :mod:`gnn_transformer.core.interface` (``begin_decoding``,
``decode_step``): the same growing graph decodes the paper's model, the decoder-only models,
``GraphVariantModel`` and the Hugging Face imports.

:class:`GrowingGraph` implements the scorer protocol of :mod:`gnn_transformer.generation.search`:
``start()`` returns the next-token log-probabilities of one hypothesis per input sequence
and ``extend(parent, token)`` grows hypothesis ``parent[h]`` by ``token[h]`` and returns
the log-probabilities of the new hypotheses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..analysis.viz import attention_matrix
from ..core.interface import DECODING, require_interface
from ..graphs.builders import as_lengths, causal, lengths_to_ptr, positions, to_padded

__all__ = ["AttentionGraph", "GrowingGraph", "GrowingSeq2SeqGraph", "GrowingCausalGraph"]


@dataclass
class AttentionGraph:
    """Attention weights of one layer on the edges of one decoded sequence, in its own numbering.

    ``edge_index`` row 0 indexes the sources (earlier target tokens for self-attention,
    source tokens for cross-attention), row 1 the target tokens 0..num_targets-1; target
    ``t`` is the node that predicted the ``t``-th token of the sequence.

    Shapes: edge_index (2, num_edges); weights (num_edges, H).
    """

    edge_index: Tensor
    weights: Tensor
    num_targets: int
    num_sources: int

    def matrix(self) -> Tensor:
        """Dense weights (H, num_targets, num_sources), zero where there is no edge."""
        return attention_matrix(self.edge_index, self.weights, self.num_targets, self.num_sources)


def _as_token_list(sequences: Sequence[Tensor], name: str, device) -> list[Tensor]:
    if len(sequences) == 0:
        raise ValueError(f"{name} is empty: pass at least one sequence of token ids")
    out = []
    for index, tokens in enumerate(sequences):
        tokens = torch.as_tensor(tokens, device=device)
        if tokens.dim() != 1 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"{name}[{index}] must be a 1-D tensor of integer token ids, got "
                             f"shape {tuple(tokens.shape)} and dtype {tokens.dtype}")
        if tokens.numel() == 0:
            raise ValueError(f"{name}[{index}] is empty: every sequence needs at least one token")
        out.append(tokens.long())
    return out


def _check_eval(model) -> None:
    if model.training:
        raise ValueError("the model is in training mode: call model.eval() before decoding "
                         "(dropout would make every step random)")


class _PrefixTree:
    """Node bookkeeping shared by both growing graphs.

    Node ids are global and follow creation order, which is also the order of every
    layer's self-attention cache, so a node id is its row in the cache.
    """

    def __init__(self, model, record_attention: bool, device, attention_window: int | None = None) -> None:
        _check_eval(model)
        if attention_window is not None and (not isinstance(attention_window, int) or attention_window < 1):
            raise ValueError(f"attention_window must be a positive integer, got {attention_window!r}")
        self.attention_window = attention_window
        self.model = model
        self.device = device
        self.num_nodes = 0
        self.path = torch.empty(0, 0, dtype=torch.long, device=device)  # (n, W) node ids, -1 = none
        self.depth = torch.empty(0, dtype=torch.long, device=device)  # (n,) nodes on each path
        self.group = torch.empty(0, dtype=torch.long, device=device)  # (n,) input sequence of each
        self.node_position: list[Tensor] = []
        self.records: list[dict] | None = [] if record_attention else None

    def _add_leaves(self, parent: Tensor, token: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """New nodes (one per hypothesis) below the paths ``parent``; returns (edges, position, group)."""
        count = token.numel()
        rows = torch.arange(count, device=self.device)
        path, depth = self.path[parent], self.depth[parent]  # (n, W), (n,)
        path = torch.cat([path, path.new_full((count, 1), -1)], dim=1)  # (n, W + 1)
        path[rows, depth] = self.num_nodes + rows
        self.path, self.depth, self.group = path, depth + 1, self.group[parent]
        column = torch.arange(path.size(1), device=self.device)
        on_path = column < self.depth[:, None]  # (n, W + 1)
        if self.attention_window is not None:  # only the last attention_window nodes of the path
            on_path &= column >= self.depth[:, None] - self.attention_window
        edges = torch.stack([path[on_path], rows.repeat_interleave(on_path.sum(1))])  # ancestors and self -> new
        return edges, depth, self.group

    def _register(self, position: Tensor, self_edges: Tensor, weights: list[dict], cross_edges: Tensor | None) -> None:
        """Count the new nodes and keep their incoming attention when asked."""
        first = self.num_nodes
        self.num_nodes += position.numel()
        self.node_position.append(position)
        if self.records is not None:
            self.records.append(dict(first=first, self_edges=self_edges, cross_edges=cross_edges,
                                     weights=[{kind: w.detach() for kind, w in layer.items()} for layer in weights]))

    def attention(self, row: int) -> list[dict[str, AttentionGraph]]:
        """Per layer, the attention graphs of live hypothesis ``row``, from the steps that built it."""
        if self.records is None:
            raise ValueError("attention was not recorded: build the graph with record_attention=True")
        nodes = self.path[row, : int(self.depth[row])]  # (T,) node ids in order of position
        node_position = torch.cat(self.node_position)
        group = int(self.group[row])
        layers = [dict() for _ in self.records[0]["weights"]]
        for kind in self._edge_kinds():
            sources, targets, weights = [], [], [[] for _ in layers]
            for record in self.records:
                edges = record[f"{kind}_edges"]
                target = edges[1] + record["first"]  # global node id of each edge's target
                keep = torch.isin(target, nodes)
                if not bool(keep.any()):
                    continue
                source = edges[0, keep]
                sources.append(node_position[source] if kind == "self" else source - self.src_ptr[group])
                targets.append(node_position[target[keep]])
                for layer, layer_weights in zip(weights, record["weights"]):
                    layer.append(layer_weights[kind][keep])
            edge_index = torch.stack([torch.cat(sources), torch.cat(targets)])
            num_sources = nodes.numel() if kind == "self" else int(self.src_lengths[group])
            for layer, layer_weights in zip(layers, weights):
                layer[kind] = AttentionGraph(edge_index, torch.cat(layer_weights), nodes.numel(), num_sources)
        return layers

    def _edge_kinds(self) -> tuple[str, ...]:
        return ("self",)

class GrowingGraph(_PrefixTree):
    r"""Incremental decoding of any model implementing :mod:`gnn_transformer.core.interface`.

    ``start()`` adds the first tokens of every sequence (the prompt of a decoder-only model, the
    start token of an encoder-decoder one, as ``model.begin_decoding`` says) as causal graphs and
    predicts from the last node of each; each later step adds one node per hypothesis with
    causal edges from its path (and, in the model, bipartite edges from its sources).

    Args:
        model: the model (in eval mode).
        inputs: one non-empty 1-D tensor of token ids per sequence (prompts or sources).
        bos: the start token of encoder-decoder models (``None``: the model's default, if any).
        record_attention: keep every step's attention weights for :meth:`attention`.
        attention_window: each node attends to the last ``attention_window`` nodes of its path
            only (itself included), as a model trained on ``graphs.causal(lengths, window)``.
    """

    def __init__(self, model, inputs: Sequence[Tensor], bos: int | None = None, record_attention: bool = False,
                 attention_window: int | None = None, *, name: str = "inputs") -> None:
        require_interface(model, DECODING, "decoding")
        _check_eval(model)
        inputs = _as_token_list(inputs, name, None)
        self.state, first = model.begin_decoding(inputs, bos=bos)
        device = self.state.position.device
        if attention_window is not None and self.state.memory is not None:
            raise ValueError("attention_window applies to decoder-only models (sliding-window causal graphs)")
        super().__init__(model, record_attention, device, attention_window)
        self.first = [t.to(device) for t in first]
        self.num_sequences = len(self.first)
        if self.state.source_lengths is not None:
            self.src_lengths, self.src_ptr = self.state.source_lengths, self.state.source_ptr

    @property
    def cache(self) -> list:
        """The model's per-layer caches of keys and values (``state.cache``)."""
        return self.state.cache

    def _edge_kinds(self) -> tuple[str, ...]:
        return ("self",) if self.state.memory is None else ("self", "cross")

    @torch.no_grad()
    def start(self) -> Tensor:
        """Add the first tokens of every sequence; returns the log-probs of the token after them, (B, V)."""
        lengths = as_lengths([p.numel() for p in self.first], device=self.device)  # (B,)
        nodes = torch.arange(int(lengths.sum()), device=self.device)
        self.path = to_padded(nodes[:, None], lengths, padding_value=-1)[..., 0]  # (B, L)
        self.depth = lengths
        self.group = torch.arange(lengths.numel(), device=self.device)
        edges, position = causal(lengths, self.attention_window), positions(lengths)
        group = self.group.repeat_interleave(lengths)  # (N,) sequence of each first node
        last = lengths_to_ptr(lengths)[1:] - 1  # (B,) the last first node of each sequence
        return self._run(torch.cat(self.first), position, edges, group)[last]

    @torch.no_grad()
    def extend(self, parent: Tensor, token: Tensor) -> Tensor:
        """Grow hypothesis ``parent[h]`` by ``token[h]``; returns the new hypotheses' log-probs, (n, V)."""
        edges, position, group = self._add_leaves(parent, token)
        return self._run(token, position, edges, group)

    def _run(self, token: Tensor, position: Tensor, edges: Tensor, group: Tensor) -> Tensor:
        logits, weights = self.model.decode_step(self.state, token, position, edges, group)
        cross = None
        if self.state.memory is not None:
            cross = self.state.cross_edges(group)
        self._register(position, edges, weights, cross)
        return torch.log_softmax(logits, dim=-1)  # (n, V)


class GrowingSeq2SeqGraph(GrowingGraph):
    """:class:`GrowingGraph` of an encoder-decoder model: ``(model, sources, bos, record_attention)``."""

    def __init__(self, model, sources: Sequence[Tensor], bos: int | None = None,
                 record_attention: bool = False) -> None:
        super().__init__(model, sources, bos, record_attention, name="sources")


class GrowingCausalGraph(GrowingGraph):
    """:class:`GrowingGraph` of a decoder-only model: ``(model, prompts, record_attention, attention_window)``."""

    def __init__(self, model, prompts: Sequence[Tensor], record_attention: bool = False,
                 attention_window: int | None = None) -> None:
        super().__init__(model, prompts, None, record_attention, attention_window, name="prompts")
