"""Walk a recorded forward pass in the order of the paper's figure 1 and build its stages.

The model is asked only through :mod:`gnn_transformer.core.interface`: its stacks, their kinds and
graphs come from ``attention_sites()``, the terms of its node features from ``input_parts()``
(when it has that method); everything else is read from the recording.

Source side: embedding, positional encoding, their sum, the encoder's graph, every encoder
layer (attention, add & norm, feed-forward, add & norm), the final norm (the memory).  Target
side: the same inputs, the decoder's causal and cross edges, every decoder layer (masked
self-attention, cross-attention, feed-forward, each with its norm), the final norm.  Then the
logits and the probabilities.  Single-stack models (encoder-only, decoder-only) have one side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ..analysis.recording import Recording
from ..core.interface import AttentionSite, site_graph
from .attention_stage import attention_stage
from .stages import (feed_forward_stage, graph_stage, input_stages, layer_summary_stage, norm_stage, output_stages,
                     residual_stage)

__all__ = ["trace_stages", "Side", "stacks_of"]

_ANY_LENGTH = (
    "One model handles any number of tokens: every weight acts on one node (embeddings, projections, norms, "
    "feed-forward) or on one edge (the score), so nothing depends on the length; the graph carries it."
)
_TEACHER_FORCING = (
    "The decoder is fed the target shifted right, starting with <s>. During training all positions run at once "
    "(teacher forcing) and the causal graph keeps each position from seeing later ones; at inference the model "
    "feeds back its own predictions, one new node at a time."
)

_MASKING = (
    "The mask is the graph: a token has no edge from a later token, so its softmax runs over itself and the "
    "earlier tokens only (the dense form gives the missing pairs a score of -inf)."
)



@dataclass
class Side:
    """The tokens of one side of the input: ``"source"``, ``"target"`` or ``"tokens"`` (a single stack)."""

    labels: Sequence[str]
    lengths: list[int]  # tokens per sequence
    position: Tensor  # (N,) position of every node


@dataclass
class _Stack:
    """One stack of layers as recorded: where its modules are and which tokens its nodes are."""

    key: str  # "encoder" / "decoder" / "stack": stage keys
    title: str  # "Encoder", "Decoder", "Decoder-only stack", "Encoder-only stack"
    module: nn.Module  # a stack with .layers (and .norm)
    prefix: str  # its qualified name in the model
    site: AttentionSite  # its first self-attention: kind and graph
    side: str  # the side of its tokens
    memory_side: str | None = None  # the source side, for cross-attention

    @property
    def causal(self) -> bool:
        return self.site.kind == "decoder self"

    @property
    def graph(self) -> str:
        return site_graph(self.site).name


def stacks_of(model: nn.Module) -> list[_Stack]:
    """The stacks of ``model`` from its ``attention_sites()``, in order: ``[encoder, decoder]`` of an
    encoder-decoder model (one with cross-attention), ``[stack]`` of a single-stack one."""
    sites = model.attention_sites()
    seq2seq = any(site.kind == "cross" for site in sites)
    first: dict[str, AttentionSite] = {}
    crossed: set[str] = set()
    for site in sites:
        prefix = site.name.rsplit(".layers.", 1)[0]
        if site.kind == "cross":
            crossed.add(prefix)
        else:
            first.setdefault(prefix, site)
    stacks = []
    for prefix, site in first.items():
        module = model.get_submodule(prefix)
        if not seq2seq:
            title = "Decoder-only stack" if site.kind == "decoder self" else "Encoder-only stack"
            stacks.append(_Stack("stack", title, module, prefix, site, "tokens"))
        elif prefix in crossed:
            stacks.append(_Stack("decoder", "Decoder", module, prefix, site, "target", memory_side="source"))
        else:
            stacks.append(_Stack("encoder", "Encoder", module, prefix, site, "source"))
    return stacks


@dataclass
class _Options:
    layers: int
    max_features: int


def _calls(recording: Recording, name: str):
    calls = recording.calls_of(name)
    if not calls:
        raise RuntimeError(f"the recorded run never called {name!r}; explain follows the layers its attention_sites() "
                           "name (gnn_transformer.core.interface)")
    return calls


def _sublayers(stack: _Stack) -> list[tuple[str, str]]:
    """(stage-key part, title) of each sublayer of one layer, in order."""
    self_title = f"masked self-attention ({stack.graph} graph)" if stack.causal else \
        f"self-attention ({stack.graph} graph)"
    parts = [("self_attention", self_title)]
    if stack.memory_side is not None:
        parts.append(("cross_attention", "cross-attention (bipartite graph, source -> target)"))
    return parts + [("feed_forward", "feed-forward")]


def _layer_stages(stack: _Stack, recording: Recording, labels: dict, index: int, options: _Options) -> list:
    layer = stack.module.layers[index]
    name = f"{stack.prefix}.layers.{index}"
    head = f"{stack.title} layer {index + 1}"
    tokens, stages = labels[stack.side], []
    for number, (part, title) in enumerate(_sublayers(stack), 1):
        key = f"{stack.key}.{index}.{part}"
        norm_call = _calls(recording, f"{name}.norm{number}")[-1]
        norm = getattr(layer, f"norm{number}")
        if part == "feed_forward":
            hidden = _calls(recording, f"{name}.linear2")[-1]
            first = _calls(recording, f"{name}.linear1")[-1].output
            sublayer = feed_forward_stage(key, f"{head} · {title}", layer, tokens, first, hidden.inputs[0],
                                          hidden.output, options.max_features)
            output = hidden.output
        else:
            record = recording.attention_of("cross" if part == "cross_attention" else stack.site.kind, index)
            keys = labels[stack.memory_side] if part == "cross_attention" else tokens
            note = _MASKING if part == "self_attention" and stack.causal else ""
            sublayer = attention_stage(key, f"{head} · {title}", record, tokens, keys, note=note,
                                       self_attention=part == "self_attention", max_features=options.max_features)
            output = record.output
        norm_title = f"{head} · norm{number}"
        if layer.norm_first:
            stages.append(norm_stage(f"{key}.norm", f"{norm_title} (before the {part.replace('_', '-')})", norm,
                                     tokens, norm_call.inputs[0], norm_call.output, options.max_features,
                                     residual=False, lead="Pre-norm: the sublayer reads the normalised vector. "))
            stages.append(sublayer)
            stages.append(residual_stage(f"{key}.residual", f"{head} · residual add after the {part.replace('_', '-')}",
                                         tokens, norm_call.inputs[0] + output, options.max_features))
        else:
            stages.append(sublayer)
            stages.append(norm_stage(f"{key}.norm", f"{norm_title} · add & norm after the {part.replace('_', '-')}",
                                     norm, tokens, norm_call.inputs[0], norm_call.output, options.max_features,
                                     residual=True))
    return stages


def _layer_output(stack: _Stack, recording: Recording, index: int) -> Tensor:
    """What one layer passes on: its own recorded output (the first tensor it returns)."""
    output = _calls(recording, f"{stack.prefix}.layers.{index}")[-1].output
    return output[0] if isinstance(output, (tuple, list)) else output  # (N, d_model)


def _stack_stages(stack: _Stack, recording: Recording, labels: dict, options: _Options) -> list:
    stages = []
    num_layers = len(stack.module.layers)
    for index in range(min(options.layers, num_layers)):
        stages += _layer_stages(stack, recording, labels, index, options)
    if options.layers < num_layers:
        hidden = [(index, _layer_output(stack, recording, index)) for index in range(options.layers, num_layers)]
        stages.append(layer_summary_stage(f"{stack.key}.summary",
                                          f"{stack.title} layers {options.layers + 1} to {num_layers} (outputs only)",
                                          hidden, labels[stack.side], options.max_features))
    final = getattr(stack.module, "norm", None)
    if final is not None:
        norm_call = _calls(recording, f"{stack.prefix}.norm")[-1]
        lead = ("The stack ends with a norm; its output is the memory that every decoder layer's "
                "cross-attention reads. " if stack.key == "encoder" else "The stack ends with a norm. ")
        stages.append(norm_stage(f"{stack.key}.final_norm", f"{stack.title} output: final norm", final,
                                 labels[stack.side], norm_call.inputs[0], norm_call.output, options.max_features,
                                 residual=False, lead=lead))
    return stages


def _inputs(model: nn.Module, recording: Recording, stack: _Stack, side: Side, options: _Options,
            fed: str = "") -> list:
    """The input stages of one side: each part the model names (``input_parts()``), then the first layer's input."""
    parts = getattr(model, "input_parts", None)  # optional in the interface: without it, the first layer's input
    parts = [part for part in (parts() if callable(parts) else []) if part.side == stack.side]
    terms = [(part, _calls(recording, part.name)[part.call].output) for part in parts]
    x = _calls(recording, f"{stack.prefix}.layers.0")[0].inputs[0]  # (N, d_model)
    return input_stages(stack.side, side.labels, terms, x, side.position, options.max_features, fed=fed)


_DESCRIPTIONS = {
    "causal": "The causal graph: each token receives an edge from itself and every earlier token, never from a "
              "later one. ",
    "complete": "The complete graph: every token receives an edge from every token of its sequence, itself included. ",
}


def _graph_words(graph: str, edge_index: Tensor, lengths: list[int], full: Tensor) -> tuple[str, str]:
    """(name, description) of the edges a self-attention really ran on: the full ``graph`` of these
    sequences (``full``, as the model declares it), or a sparse part of it."""
    if edge_index.shape == full.shape and torch.equal(edge_index, full):  # both sorted by target, then source
        described = _DESCRIPTIONS.get(graph, f"The {graph} graph the model attends over, on these sequences. ")
        return graph, described + _ANY_LENGTH
    degree = torch.bincount(edge_index[1], minlength=sum(lengths))
    only_earlier = bool((edge_index[0] <= edge_index[1]).all())
    name = "sparse causal graph" if only_earlier else "sparse graph"
    return name, (f"Not the full {graph} graph: {edge_index.size(1)} edges where the {graph} graph has "
                  f"{full.size(1)}; each token receives {int(degree.min())} to {int(degree.max())} edges"
                  f"{', none from a later token' if only_earlier else ''}. Attention runs only along these edges "
                  "(a sparse pattern such as a sliding window): each token's softmax is over its own in-edges. "
                  + _ANY_LENGTH)


_BIASES = (" Each edge also carries a score bias b_ij computed from the positions of its two ends (relative "
           "positions: T5's buckets, ALiBi), once for all layers: the 'bias' column of every attention's edges.")


def _graph_stage(stack: _Stack, recording: Recording, labels: dict, sides: dict[str, Side]) -> object:
    record = recording.attention_of(stack.site.kind, 0)
    edges, tokens = record.edge_index, labels[stack.side]
    full = site_graph(stack.site)(sides[stack.side].lengths).to(edges.device)
    name, words = _graph_words(stack.graph, edges, sides[stack.side].lengths, full)
    if record.edge_bias is not None:
        words += _BIASES
    if stack.key == "encoder":
        return graph_stage("encoder.graph", f"Encoder graph: {name}, per sentence", words,
                           [(name, edges, tokens, tokens)])
    if stack.key == "decoder":
        cross = recording.attention_of("cross", 0).edge_index
        graphs = [(f"{name} (masked self-attention)" if stack.causal else name, edges, tokens, tokens),
                  ("bipartite (cross-attention, source j -> target i)", cross, tokens, labels[stack.memory_side])]
        return graph_stage("decoder.graph", f"Decoder graphs: {name} self-attention and cross-attention edges",
                           words + " Cross-attention runs on a bipartite graph: every target token receives an "
                           "edge from every source token of its pair.", graphs)
    return graph_stage("stack.graph", f"{stack.title} graph: {name}", words, [(name, edges, tokens, tokens)])


def trace_stages(model: nn.Module, sides: dict[str, Side], recording: Recording, logits: Tensor,
                 output_words: Sequence[str], *, layers: int, max_features: int,
                 after: dict[str, list] | None = None) -> list:
    """The stages of one recorded forward pass of ``model``.

    Args:
        sides: the tokens of each side: ``"source"`` and ``"target"`` (encoder-decoder) or ``"tokens"``.
        logits: (T, vocab) what the run returned, one row per token of the last stack.
        output_words: the name of every output class (vocabulary words, or numbers).
        layers: how many layers of each stack to show in full.
        max_features: longest vector shown in full.
        after: stages to show after a stack's own, by stack key (``"encoder"``, ``"decoder"``,
            ``"stack"``): e.g. a ponder map.
    """
    options = _Options(layers, max_features)
    labels = {name: side.labels for name, side in sides.items()}
    stages = []
    for stack in stacks_of(model):
        fed = _TEACHER_FORCING if stack.key == "decoder" else ""
        stages += _inputs(model, recording, stack, sides[stack.side], options, fed=fed)
        stages.append(_graph_stage(stack, recording, labels, sides))
        stages += _stack_stages(stack, recording, labels, options)
        stages += (after or {}).get(stack.key, [])
    return stages + output_stages(labels[stack.side], logits, output_words, max_features)
