"""The stages of a Universal Transformer's forward pass: the shared layers and the ponder map.

A model that ponders (``model.ponder_steps``, :mod:`gnn_transformer.core.interface`) applies one
encoder layer and one decoder layer T times with shared weights.  Its explanation shows each
side's input (embedding + the coordinate embedding of step 1), its graph, the shared layer at
its last step in full, the halting probability of every node at every step with the steps it
took (the ponder map), the final norm, and the output.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..analysis.recording import Recording
from .document import Stage, Table
from .stages import embedding_stages, graph_stage, output_stages
from .trace import _TEACHER_FORCING, _calls, _graph_words, _lengths, _Options, _Stack, _stack_stages

__all__ = ["universal_stages", "ponder_stage"]

_STEPS = ("The Universal Transformer adds the coordinate embedding P^t (sinusoidal in the position and in the "
          "step t) before every step of its shared layer; shown here is step 1's, the input of the first step. ")


def ponder_stage(key: str, title: str, labels, steps: Tensor, halting: list[Tensor], max_steps: int) -> Stage:
    """The ponder map of one side: per node the steps it took and its halting probability at every step."""
    columns = ["i", "token", "steps", *[f"p{t + 1}" for t in range(len(halting))]]
    rows = [[node, label, int(steps[node]), *[float(p[node]) for p in halting]] for node, label in enumerate(labels)]
    return Stage(
        key, title, "N_i = min{t : p_i^1 + ... + p_i^t ≥ threshold} (at most T),   y_i = Σ_{t<N_i} p_i^t h_i^t + R_i h_i^N_i",
        "Adaptive computation time: after each step every node computes its halting probability p = σ(w·h + b) "
        "and stops once the sum reaches the threshold (or at the last step); its output is the weighted sum of "
        "its states, the last with the remainder R. A node that has halted keeps its state and keeps sending "
        f"messages to the nodes still running. At most {max_steps} steps; the halting probabilities after a "
        "node halted are computed but not used.",
        [f"steps: (N,) = ({len(labels)},)"],
        [Table("ponder map: steps per node, halting probability per step", columns, rows)])


def _inputs(model: nn.Module, recording: Recording, names: dict, embedding: nn.Module, stack_name: str, call: int,
            side: str, labels, positions, options: _Options, fed: str = "") -> list:
    embedded = _calls(recording, names[id(embedding)])[call].output
    if model.step_encoding is None:  # positions once, at the input, as the Transformer
        positional = _calls(recording, "positional")[call].output
    else:
        positional = _calls(recording, f"{stack_name}.coordinates")[0].output  # P^1, the first step's
        fed = _STEPS + fed
    return embedding_stages(side, labels, embedded, positional, embedded + positional, positions,
                            options.max_features, fed=fed)


def universal_stages(model: nn.Module, batch, recording: Recording, ponder: dict, labels: dict, output_words, *,
                     layers: int, max_features: int) -> list:
    """The stages of one recorded forward pass of a Universal Transformer; ``ponder`` is ``model.ponder_steps(batch)``."""
    options = _Options(layers, max_features)
    names = {id(module): name for name, module in model.named_modules()}
    logits = _calls(recording, names[id(model.generator)])[-1].output
    source, target = labels["source"], labels["target"]
    steps = ponder["max_steps"]
    stages = _inputs(model, recording, names, model.src_embed, "encoder", 0, "source", source, batch["src"].position,
                     options)
    encoder_edges = recording.attention_of("encoder self", 0).edge_index
    name, words = _graph_words("complete", encoder_edges, _lengths(batch["src"]))
    stages.append(graph_stage("encoder.graph", f"Encoder graph: {name}, per sentence (every step)", words,
                              [(name, encoder_edges, source, source)]))
    encoder = _Stack("encoder", f"Encoder (one layer, shared by {steps} steps; its last step)", model.encoder,
                     "encoder", "complete", False, source)
    stages += _stack_stages(encoder, recording, options)
    stages.append(_ponder(model, recording, "encoder", source, ponder["source"], steps))
    stages += _inputs(model, recording, names, model.tgt_embed, "decoder", -1, "target", target,
                      batch["tgt"].position, options, fed=_TEACHER_FORCING)
    decoder_edges = recording.attention_of("decoder self", 0).edge_index
    name, words = _graph_words("causal", decoder_edges, _lengths(batch["tgt"]))
    edges = [(f"{name} (masked self-attention)", decoder_edges, target, target),
             ("bipartite (cross-attention, source j -> target i)", recording.attention_of("cross", 0).edge_index,
              target, source)]
    stages.append(graph_stage("decoder.graph", f"Decoder graphs: {name} self-attention and cross-attention edges",
                              words, edges))
    decoder = _Stack("decoder", f"Decoder (one layer, shared by {steps} steps; its last step)", model.decoder,
                     "decoder", "causal", True, target, memory_labels=source)
    stages += _stack_stages(decoder, recording, options)
    stages.append(_ponder(model, recording, "decoder", target, ponder["target"], steps))
    return stages + output_stages(target, logits, output_words, max_features)


def _ponder(model, recording: Recording, stack_name: str, labels, steps: Tensor, max_steps: int) -> Stage:
    halting = [call.output for call in recording.calls_of(f"{stack_name}.halting")]  # one (N,) per step, or none
    side = "encoder" if stack_name == "encoder" else "decoder"
    return ponder_stage(f"{side}.ponder", f"{side.capitalize()} ponder map: the steps each token took", labels, steps,
                        halting, max_steps)
