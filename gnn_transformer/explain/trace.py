"""Walk a recorded forward pass in the order of the paper's figure 1 and build its stages.

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

from ..graphs import causal, complete
from ..core.model import GraphTransformerModel
from ..analysis.recording import Recording
from .attention_stage import attention_stage
from .stages import (embedding_stages, feed_forward_stage, graph_stage, layer_summary_stage, norm_stage,
                     output_stages, residual_stage)

__all__ = ["trace_stages"]

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
class _Stack:
    """One stack of layers as recorded: where its modules are and which tokens its nodes are."""

    key: str  # "encoder" / "decoder": stage keys
    title: str  # "Encoder", "Decoder", "Decoder-only stack"
    module: nn.Module  # a GraphTransformerEncoder / GraphTransformerDecoder
    prefix: str  # its qualified name in the model
    graph: str  # the name of its self-attention graph: "complete", "causal", a pattern
    causal: bool  # no token receives an edge from a later one (masked self-attention)
    labels: Sequence[str]
    memory_labels: Sequence[str] | None = None  # source tokens, for cross-attention


@dataclass
class _Options:
    layers: int
    max_features: int


def _calls(recording: Recording, name: str):
    calls = recording.calls_of(name)
    if not calls:
        raise RuntimeError(f"the recorded run never called {name!r}; explain follows the forward pass of "
                           "GraphTransformerModel and GraphSequenceModel (GraphEncoderModel, GraphDecoderModel)")
    return calls


def _sublayers(stack: _Stack) -> list[tuple[str, str]]:
    """(stage-key part, title) of each sublayer of one layer, in order."""
    self_title = f"masked self-attention ({stack.graph} graph)" if stack.causal else \
        f"self-attention ({stack.graph} graph)"
    parts = [("self_attention", self_title)]
    if stack.memory_labels is not None:
        parts.append(("cross_attention", "cross-attention (bipartite graph, source -> target)"))
    return parts + [("feed_forward", "feed-forward")]


def _layer_stages(stack: _Stack, recording: Recording, index: int, options: _Options) -> list:
    layer = stack.module.layers[index]
    name = f"{stack.prefix}.layers.{index}"
    head = f"{stack.title} layer {index + 1}"
    labels, stages = stack.labels, []
    for number, (part, title) in enumerate(_sublayers(stack), 1):
        key = f"{stack.key}.{index}.{part}"
        norm_call = _calls(recording, f"{name}.norm{number}")[-1]
        norm = getattr(layer, f"norm{number}")
        if part == "feed_forward":
            hidden = _calls(recording, f"{name}.linear2")[-1]
            first = _calls(recording, f"{name}.linear1")[-1].output
            sublayer = feed_forward_stage(key, f"{head} · {title}", layer, labels, first, hidden.inputs[0],
                                          hidden.output, options.max_features)
            output = hidden.output
        else:
            record = recording.attention_of("cross" if part == "cross_attention" else _self_kind(stack), index)
            keys = stack.memory_labels if part == "cross_attention" else labels
            note = _MASKING if part == "self_attention" and stack.causal else ""
            sublayer = attention_stage(key, f"{head} · {title}", record, labels, keys, note=note,
                                       self_attention=part == "self_attention", max_features=options.max_features)
            output = record.output
        norm_title = f"{head} · norm{number}"
        if layer.norm_first:
            stages.append(norm_stage(f"{key}.norm", f"{norm_title} (before the {part.replace('_', '-')})", norm,
                                     labels, norm_call.inputs[0], norm_call.output, options.max_features,
                                     residual=False, lead="Pre-norm: the sublayer reads the normalised vector. "))
            stages.append(sublayer)
            stages.append(residual_stage(f"{key}.residual", f"{head} · residual add after the {part.replace('_', '-')}",
                                         labels, norm_call.inputs[0] + output, options.max_features))
        else:
            stages.append(sublayer)
            stages.append(norm_stage(f"{key}.norm", f"{norm_title} · add & norm after the {part.replace('_', '-')}",
                                     norm, labels, norm_call.inputs[0], norm_call.output, options.max_features,
                                     residual=True))
    return stages


def _self_kind(stack: _Stack) -> str:
    """The recorded kind of a stack's self-attention: ``"decoder self"`` on a causal graph (the model's
    ``attention_sites()`` say so, for a decoder-only stack too), ``"encoder self"`` otherwise."""
    return "decoder self" if stack.causal else "encoder self"


def _layer_output(stack: _Stack, recording: Recording, index: int) -> Tensor:
    """What one layer passes on (its last norm's output, or for pre-norm the last residual sum)."""
    layer = stack.module.layers[index]
    name = f"{stack.prefix}.layers.{index}"
    last_norm = _calls(recording, f"{name}.norm{3 if stack.memory_labels is not None else 2}")[-1]
    if layer.norm_first:
        return last_norm.inputs[0] + _calls(recording, f"{name}.linear2")[-1].output  # (N, d_model)
    return last_norm.output


def _stack_stages(stack: _Stack, recording: Recording, options: _Options) -> list:
    stages = []
    num_layers = len(stack.module.layers)
    for index in range(min(options.layers, num_layers)):
        stages += _layer_stages(stack, recording, index, options)
    if options.layers < num_layers:
        hidden = [(index, _layer_output(stack, recording, index)) for index in range(options.layers, num_layers)]
        stages.append(layer_summary_stage(f"{stack.key}.summary",
                                          f"{stack.title} layers {options.layers + 1} to {num_layers} (outputs only)",
                                          hidden, stack.labels, options.max_features))
    if stack.module.norm is not None:
        norm_call = _calls(recording, f"{stack.prefix}.norm")[-1]
        lead = ("The stack ends with a norm; its output is the memory that every decoder layer's "
                "cross-attention reads. " if stack.key == "encoder" else "The stack ends with a norm. ")
        stages.append(norm_stage(f"{stack.key}.final_norm", f"{stack.title} output: final norm", stack.module.norm,
                                 stack.labels, norm_call.inputs[0], norm_call.output, options.max_features,
                                 residual=False, lead=lead))
    return stages


def _inputs(recording: Recording, names: dict, embedding: nn.Module, side: str, call: int, labels, positions,
            options: _Options, fed: str = "") -> list:
    """The embedding stages of one side; ``call`` picks the call of shared modules (0: source, -1: target)."""
    embedded = _calls(recording, names[id(embedding)])[call].output
    positional = _calls(recording, "positional")[call].output
    summed = _calls(recording, "dropout")[call].output
    return embedding_stages(side, labels, embedded, positional, summed, positions, options.max_features, fed=fed)


def _lengths(store) -> list[int]:
    """Tokens per sequence of a (collated) node store; one sequence when it is not a batch."""
    ptr = getattr(store, "ptr", None)
    return ptr.diff().tolist() if ptr is not None else [store.num_nodes]


_DESCRIPTIONS = {
    "causal": "The causal graph: each token receives an edge from itself and every earlier token, never from a "
              "later one. ",
    "complete": "The complete graph: every token receives an edge from every token of its sequence, itself included. ",
}


def _graph_words(graph: str, edge_index: Tensor, lengths: list[int], full: Tensor | None = None) -> tuple[str, str]:
    """(name, description) of the edges a self-attention really ran on: the full ``graph`` of these
    sequences (``full``, by default the builder of that name: "complete" or "causal"), or a sparse
    pattern of it."""
    if full is None:
        full = causal(lengths) if graph == "causal" else complete(lengths)
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


def trace_stages(model: nn.Module, batch, recording: Recording, labels: dict[str, list[str]],
                 output_words: Sequence[str], *, layers: int, max_features: int) -> list:
    """The stages of one recorded forward pass of ``model`` on ``batch``.

    Args:
        labels: the token of each node, under ``"source"`` and ``"target"`` (encoder-decoder)
            or ``"tokens"`` (single stack).
        output_words: the name of every output class (vocabulary words, or numbers).
        layers: how many layers of each stack to show in full.
        max_features: longest vector shown in full.
    """
    options = _Options(layers, max_features)
    names = {id(module): name for name, module in model.named_modules()}
    logits = _calls(recording, names[id(model.generator)])[-1].output
    if isinstance(model, GraphTransformerModel):
        source, target = labels["source"], labels["target"]
        encoder = _Stack("encoder", "Encoder", model.transformer.encoder, "transformer.encoder", "complete", False,
                         source)
        decoder = _Stack("decoder", "Decoder", model.transformer.decoder, "transformer.decoder", "causal", True, target,
                         memory_labels=source)
        stages = _inputs(recording, names, model.src_embed, "source", 0, source, batch["src"].position, options)
        encoder_edges = recording.attention_of("encoder self", 0).edge_index
        name, words = _graph_words("complete", encoder_edges, _lengths(batch["src"]))
        stages.append(graph_stage("encoder.graph", f"Encoder graph: {name}, per sentence", words,
                                  [(name, encoder_edges, source, source)]))
        stages += _stack_stages(encoder, recording, options)
        stages += _inputs(recording, names, model.tgt_embed, "target", -1, target, batch["tgt"].position, options,
                          fed=_TEACHER_FORCING)
        decoder_edges = recording.attention_of("decoder self", 0).edge_index
        name, words = _graph_words("causal", decoder_edges, _lengths(batch["tgt"]))
        edges = [(f"{name} (masked self-attention)", decoder_edges, target, target),
                 ("bipartite (cross-attention, source j -> target i)", recording.attention_of("cross", 0).edge_index,
                  target, source)]
        stages.append(graph_stage("decoder.graph", f"Decoder graphs: {name} self-attention and cross-attention edges",
                                  words + " Cross-attention runs on a bipartite graph: every target token receives an "
                                  "edge from every source token of its pair.", edges))
        stages += _stack_stages(decoder, recording, options)
    else:  # one stack on the graph the model declares (asked, not inferred from its class)
        graph, lengths = model.graph, _lengths(batch)
        is_causal = bool(graph.causal)
        title = "Decoder-only stack" if is_causal else "Encoder-only stack"
        tokens = labels["tokens"]
        stack = _Stack("stack", title, model.encoder, "encoder", graph.name, is_causal, tokens)
        stages = _inputs(recording, names, model.embed, "tokens", 0, tokens, batch.position, options)
        stack_edges = recording.attention_of(_self_kind(stack), 0).edge_index
        name, words = _graph_words(graph.name, stack_edges, lengths, full=model.graph_for(lengths))
        stages.append(graph_stage("stack.graph", f"{title} graph: {name}", words, [(name, stack_edges, tokens, tokens)]))
        stages += _stack_stages(stack, recording, options)
    return stages + output_stages(labels.get("target", labels.get("tokens")), logits, output_words, max_features)
