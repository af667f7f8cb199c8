r"""The one interface the tools ask of a model: its attention sites and one decoding step on a growing graph.

Generation, recording, explaining and exploring never test a model's class.  They ask the model
through the methods below, which the paper's model (:class:`~gnn_transformer.GraphTransformerModel`),
the single-stack models (:class:`~gnn_transformer.GraphSequenceModel`, hence
:class:`~gnn_transformer.GraphEncoderModel`, :class:`~gnn_transformer.GraphDecoderModel` and
:class:`~gnn_transformer.variants.GraphVariantModel`) and the four Hugging Face imports
(:mod:`gnn_transformer.convert.hf`) implement.

**Attention sites.** ``model.attention_sites()`` lists every attention module with its kind
(one of :data:`ATTENTION_KINDS`: ``"encoder self"`` on the complete graph of a source,
``"decoder self"`` on the causal graph of a target or of a decoder-only model's tokens,
``"cross"`` on the bipartite graph from source to target tokens) and its layer.

**Decoding on a growing graph.** In the graph view a decoding step adds one node per hypothesis.
``model.begin_decoding(inputs, bos=)`` prepares a :class:`DecodingState` for a ragged batch of
inputs (an encoder-decoder model encodes its sources once; its memory, their positions and
lengths go into the state) and returns the first tokens of every sequence: the prompt of a
decoder-only model, the start token of an encoder-decoder one.  A model that cannot decode one
token at a time (an encoder on complete graphs) raises ``ValueError`` there, naming why; so does a token id outside the vocabulary
(:func:`check_token_ids`).  Then

.. math::

    \text{logits}_{\text{new}} = \text{model.decode\_step}(\text{state}, t_\text{new}, p_\text{new},
    E_\text{new}, g_\text{new})

adds the nodes ``t_new`` (token ids) at positions ``p_new`` whose incoming causal edges are
``E_new`` (row 0: ids of any node decoded so far, the new ones included, in order of creation;
row 1: the new nodes, numbered from 0), ``g_new`` being the input sequence of each new node
(the cross-attention edges come from that sequence's source tokens,
:meth:`DecodingState.cross_edges`).  The model embeds the new nodes (absolute positions per
node), runs its decoder stack with per-layer caches of keys and values as node features
(``state.cache``; rotary positions rotate each new node's query and key by its own
position), computes per-edge biases (T5 buckets, ALiBi) *for the new edges only*, from the
positions of both ends (:meth:`DecodingState.grow` keeps every node's position), and returns
the logits of the new nodes and, per layer, their attention weights per edge
(``{"self": (num_edges, H), "cross": ...}``).

Shapes: t_new, p_new, g_new (n,); E_new (2, num_new_edges); logits (n, vocab).

**What explain shows of the inputs (optional).** ``model.input_parts()`` lists the terms of each
side's node features as :class:`InputPart`: which module computes the token embedding, the
absolute positions, the token types, and which of its calls in one forward pass is that side's
(a module shared by source and target is called once per side).  ``explain`` shows each part and
then the input of the stack's first layer; a model without the method shows that input only.

An :class:`AttentionSite` may name the graph its self-attention runs on (``site.graph``, a
:class:`~gnn_transformer.graphs.SequenceGraph` such as a window pattern); without one, tools take
the complete graph for ``"encoder self"``, the causal graph for ``"decoder self"``
(:func:`site_graph`).

**Pondering (optional).** A model whose nodes take a number of steps of their own (adaptive
computation time, :class:`~gnn_transformer.variants.GraphUniversalTransformer`) has
``model.ponder_steps(inputs)`` -> ``{"source": (S,), "target": (N,), "max_steps": T}``, the steps each
node took on the model's input; the explorer and ``explain`` show it as a ponder map.

:func:`require_interface` checks that a model implements what a tool needs and names what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from ..graphs.builders import _contiguous_ranges, lengths_to_ptr
from ..graphs.patterns.registry import sequence_graph
from .attention import KeyValueCache

__all__ = ["ATTENTION_KINDS", "AttentionSite", "DecodingState", "GraphModelInterface", "InputPart",
           "require_interface", "check_token_ids", "site_graph", "DECODING", "RECORDING", "PONDERING",
           "INPUT_ROLES"]

ATTENTION_KINDS = ("encoder self", "decoder self", "cross")
DECODING = ("begin_decoding", "decode_step")
RECORDING = ("attention_sites",)
INPUT_ROLES = ("embedding", "positional", "token type")
PONDERING = ("ponder_steps",)


@dataclass(frozen=True)
class AttentionSite:
    """One attention module of a model: its qualified name, kind (:data:`ATTENTION_KINDS`) and layer."""

    name: str
    kind: str
    layer: int
    module: nn.Module
    graph: object = None  # the SequenceGraph of a self-attention, when the model declares one (see site_graph)


@dataclass(frozen=True)
class InputPart:
    """One term of a side's node features, as computed by the module ``name`` (qualified name).

    Attributes:
        side: ``"source"`` / ``"target"`` (encoder-decoder) or ``"tokens"`` (a single stack).
        role: one of :data:`INPUT_ROLES`.
        name: the qualified name of the module whose output is this term.
        call: which of that module's calls in one forward pass is this side's (0: the first,
            -1: the last; a module shared by both sides is called once per side).
        formula: what the module computes, e.g. ``"e_i = E[token_i] · √d_model"``.
    """

    side: str
    role: str
    name: str
    call: int = 0
    formula: str = ""


@dataclass
class DecodingState:
    """What a model keeps between decoding steps.

    Attributes:
        cache: one entry per decoder layer, passed as the stack's ``cache``: a
            :class:`KeyValueCache` (single stack) or ``{"self": ..., "cross": ...}`` (decoder layers).
        position: (num_nodes,) the position of every node decoded so far, in order of creation.
        memory: (S, d_model) the encoder's output for all sources, or ``None`` (decoder-only).
        memory_position: (S,) positions of the source tokens, or ``None``.
        source_lengths: (B,) tokens of each source, or ``None``.
    """

    cache: list
    position: Tensor
    memory: Tensor | None = None
    memory_position: Tensor | None = None
    source_lengths: Tensor | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def decoder_only(cls, num_layers: int, device) -> "DecodingState":
        return cls([KeyValueCache() for _ in range(num_layers)], torch.empty(0, dtype=torch.long, device=device))

    @classmethod
    def seq2seq(cls, num_layers: int, memory: Tensor, memory_position: Tensor, source_lengths: Tensor
                ) -> "DecodingState":
        cache = [{"self": KeyValueCache(), "cross": KeyValueCache(static=True)} for _ in range(num_layers)]
        return cls(cache, torch.empty(0, dtype=torch.long, device=memory.device), memory, memory_position,
                   source_lengths)

    @property
    def source_ptr(self) -> Tensor:
        """(B + 1,) offsets of each source's tokens in ``memory``."""
        return lengths_to_ptr(self.source_lengths)

    def grow(self, position: Tensor) -> Tensor:
        """Add the new nodes' positions; returns the positions of all nodes so far, (num_nodes,)."""
        self.position = torch.cat([self.position, position])
        return self.position

    def cross_edges(self, group: Tensor) -> Tensor:
        """Bipartite edges from every source token of sequence ``group[h]`` to new node ``h``, (2, num_edges)."""
        return _contiguous_ranges(self.source_ptr[group], self.source_lengths[group])


@runtime_checkable
class GraphModelInterface(Protocol):
    """What the tools ask of a model (see the module docstring)."""

    def attention_sites(self) -> list[AttentionSite]:
        ...

    def begin_decoding(self, inputs: Sequence[Tensor], *, bos: int | None = None
                       ) -> tuple[DecodingState, list[Tensor]]:
        ...

    def decode_step(self, state: DecodingState, tokens: Tensor, position: Tensor, edge_index: Tensor,
                    group: Tensor) -> tuple[Tensor, list[dict]]:
        ...


def site_graph(site: AttentionSite):
    """The :class:`~gnn_transformer.graphs.SequenceGraph` a self-attention site runs on: the one it names,
    else the complete graph (``"encoder self"``) or the causal graph (``"decoder self"``); ``None`` for cross."""
    if site.graph is not None:
        return site.graph
    return {"encoder self": sequence_graph("complete"), "decoder self": sequence_graph("causal")}.get(site.kind)


def require_interface(model, methods: Sequence[str], tool: str) -> None:
    """Raise ``TypeError`` naming the methods of the interface that ``model`` lacks for ``tool``."""
    missing = [name for name in methods if not callable(getattr(model, name, None))]
    if missing:
        raise TypeError(f"{tool} needs a model implementing gnn_transformer.core.interface ({', '.join(methods)}); "
                        f"this {type(model).__name__} lacks {', '.join(missing)}")


def check_token_ids(inputs: Sequence[Tensor], vocab_size: int, name: str = "inputs") -> None:
    """Raise ``ValueError`` naming the first sequence with a token id outside ``[0, vocab_size)``."""
    for index, tokens in enumerate(inputs):
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
            bad = tokens[(tokens < 0) | (tokens >= vocab_size)][0]
            raise ValueError(f"{name}[{index}] holds token id {int(bad)}, outside the model's vocabulary of "
                             f"{vocab_size} tokens (ids 0..{vocab_size - 1})")


def sites_from_stacks(model: nn.Module, stacks: Sequence[tuple[str, str]], graph=None) -> list[AttentionSite]:
    """Attention sites of ``model`` from its stacks: ``(qualified name of a stack, kind of its self-attention)``;
    a stack whose layers have ``multihead_attn`` adds ``"cross"`` sites.  ``graph``: the
    :class:`~gnn_transformer.graphs.SequenceGraph` of every self-attention, if the model declares one."""
    sites = []
    for stack_name, self_kind in stacks:
        stack = model.get_submodule(stack_name)
        for index, layer in enumerate(stack.layers):
            prefix = f"{stack_name}.layers.{index}."
            sites.append(AttentionSite(prefix + "self_attn", self_kind, index, layer.self_attn, graph))
            cross = getattr(layer, "multihead_attn", None)
            if cross is not None:
                sites.append(AttentionSite(prefix + "multihead_attn", "cross", index, cross))
    return sites


def source_batch(sources: Sequence[Tensor], device) -> tuple[Tensor, Tensor, Tensor]:
    """A ragged batch of sources as (tokens (S,), positions (S,) from 0 in each, lengths (B,))."""
    from ..graphs.builders import as_lengths, positions

    lengths = as_lengths([s.numel() for s in sources], device=device)
    return torch.cat(list(sources)).to(device), positions(lengths), lengths
