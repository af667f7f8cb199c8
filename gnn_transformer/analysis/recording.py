r"""Record what a model computes inside: every module's inputs and output, every attention's edges.

:func:`record` is a context manager.  Inside it, every submodule's call is kept
(:class:`ModuleCall`: the module's qualified name, its positional inputs and its output), and
every :class:`~gnn_transformer.core.attention.GraphMultiheadAttention` keeps an
:class:`AttentionRecord` with the tensors of each message-passing step:

.. math::

    s_{ij} = \frac{q_i \cdot k_j}{\sqrt{d_k}} + b_{ij}, \qquad
    \alpha_{ij} = \frac{\exp s_{ij}}{\sum_{j' \in \mathcal N(i)} \exp s_{ij'}}, \qquad
    m_{ij} = \alpha_{ij} v_j, \qquad
    h_i = \sum_{j \in \mathcal N(i)} m_{ij}

per head, then :math:`\operatorname{concat}_h(h_i) W^O`.  ``q``, ``k``, ``v``, the weights
:math:`\alpha`, the aggregation :math:`h` and the output are the tensors the model itself
computed, handed to each attention module's attention hook (``register_attention_hook``) by its
reference message-passing backend, which recording switches on for the duration; the scores
:math:`s` and messages :math:`m` are recomputed from them by the formulas above, and
``edge_softmax(scores) == weights`` holds (tested).

Example::

    >>> import torch
    >>> from gnn_transformer import GraphTransformerModel, graphs
    >>> from gnn_transformer.analysis.recording import record
    >>> model = GraphTransformerModel(20, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1)
    >>> batch = graphs.seq2seq_batch([torch.tensor([5, 6, 7])], [torch.tensor([0, 3])])
    >>> with record(model) as recording:
    ...     logits = model(batch)
    >>> [(a.kind, a.layer) for a in recording.attention]
    [('encoder self', 0), ('decoder self', 0), ('cross', 0)]
    >>> first = recording.attention[0]
    >>> first.scores.shape                               # (num_edges, H): 3 x 3 edges, 2 heads
    torch.Size([9, 2])
    >>> recording.output("transformer.encoder.layers.0.norm1").shape   # that norm's output
    torch.Size([3, 16])

Recording keeps detached copies; it is meant for small runs (explanations, pictures).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn

from ..core.attention import AttentionTensors, GraphMultiheadAttention

__all__ = ["AttentionRecord", "ModuleCall", "Recording", "record", "record_inference", "attention_kind"]

_KINDS = {  # (stack, attention module) in a qualified name -> kind of attention
    ("encoder", "self_attn"): "encoder self",
    ("decoder", "self_attn"): "decoder self",
    ("decoder", "multihead_attn"): "cross",
}


def attention_kind(name: str) -> tuple[str, int | None]:
    """``'transformer.decoder.layers.1.multihead_attn'`` -> ``('cross', 1)``.

    Kinds are ``'encoder self'``, ``'decoder self'`` and ``'cross'``; an attention module
    outside a stack's ``layers`` keeps its own name as kind and layer ``None``.
    """
    parts = name.split(".")
    if len(parts) >= 4 and parts[-3] == "layers" and parts[-2].isdigit():
        kind = _KINDS.get((parts[-4], parts[-1]))
        if kind is not None:
            return kind, int(parts[-2])
    return name, None


@dataclass
class ModuleCall:
    """One call of a submodule: its qualified name, positional inputs and output (detached)."""

    name: str
    inputs: tuple
    output: object


@dataclass
class AttentionRecord:
    """One attention call as message passing (detached tensors).

    Attributes:
        name: qualified name of the attention module; ``kind`` and ``layer`` from it
            (see :func:`attention_kind`).
        edge_index: (2, num_edges) the edges attention ran on, source ``j`` then target ``i``
            (``add_bias_kv``/``add_zero_attn`` sources appended, numbered after the real ones).
        query: (T, H, C); key: (S, H, C); value: (S, H, Cv) -- after the input projections.
        edge_bias: (num_edges, H) or (num_edges, 1) score bias, or ``None``.
        scale: the factor of the dot product (``1 / sqrt(head_dim)`` by default).
        scores: (num_edges, H) :math:`s_{ij}`; weights: (num_edges, H) :math:`\alpha_{ij}`.
        messages: (num_edges, H, Cv) :math:`\alpha_{ij} v_j`; aggregated: (T, H, Cv) :math:`h_i`.
        concatenated: (T, H * Cv) heads side by side; output: (T, E) after ``out_proj``.
    """

    name: str
    kind: str
    layer: int | None
    edge_index: Tensor
    query: Tensor
    key: Tensor
    value: Tensor
    edge_bias: Tensor | None
    scale: float
    scores: Tensor
    weights: Tensor
    messages: Tensor
    aggregated: Tensor
    concatenated: Tensor | None = None
    output: Tensor | None = None

    @property
    def num_heads(self) -> int:
        return self.weights.size(1)


@dataclass
class Recording:
    """What :func:`record` kept: module calls and attention records, in call order."""

    calls: list[ModuleCall] = field(default_factory=list)
    attention: list[AttentionRecord] = field(default_factory=list)

    def calls_of(self, name: str) -> list[ModuleCall]:
        """Every call of the submodule with this qualified name, in order."""
        return [call for call in self.calls if call.name == name]

    def output(self, name: str, call: int = -1):
        """The output of one call (default: the last) of a submodule."""
        calls = self.calls_of(name)
        if not calls:
            known = sorted({c.name for c in self.calls})
            raise KeyError(f"no call of a module named {name!r} was recorded; recorded modules: {known}")
        return calls[call].output

    def attention_of(self, kind: str, layer: int) -> AttentionRecord:
        """The (last) attention record of one kind and layer, e.g. ``('cross', 0)``."""
        for entry in reversed(self.attention):
            if entry.kind == kind and entry.layer == layer:
                return entry
        have = sorted({(entry.kind, entry.layer) for entry in self.attention}, key=str)
        raise KeyError(f"no {kind!r} attention of layer {layer} was recorded; recorded: {have}")


def _detach(value):
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    return value


def _attention_hook(name: str, recording: Recording, kind: str, layer: int | None):
    """An attention hook (:meth:`GraphMultiheadAttention.register_attention_hook`) that keeps an
    :class:`AttentionRecord` of every call, with the scores and messages recomputed from its tensors."""

    def hook(module: GraphMultiheadAttention, tensors: AttentionTensors) -> None:
        source, target = tensors.edge_index
        scores = (tensors.query[target] * tensors.key[source]).sum(dim=-1) * tensors.scale  # (num_edges, H)
        if tensors.edge_bias is not None:
            scores = scores + tensors.edge_bias
        weights = tensors.weights  # the reference backend, switched on by record(), always has them
        recording.attention.append(AttentionRecord(
            name=name, kind=kind, layer=layer, edge_index=_detach(tensors.edge_index), query=_detach(tensors.query),
            key=_detach(tensors.key), value=_detach(tensors.value), edge_bias=_detach(tensors.edge_bias),
            scale=float(tensors.scale), scores=_detach(scores), weights=_detach(weights),
            messages=_detach(weights.unsqueeze(-1) * tensors.value[source]),  # (num_edges, H, Cv)
            aggregated=_detach(tensors.aggregated), concatenated=_detach(tensors.aggregated.flatten(1)),
            output=_detach(tensors.output),
        ))

    return hook


@contextlib.contextmanager
def record(model: nn.Module) -> Iterator[Recording]:
    """Record every submodule call and every attention of ``model`` run inside the block.

    Module calls are seen through forward hooks, attention through each attention module's
    attention hook (:meth:`~gnn_transformer.core.attention.GraphMultiheadAttention.register_attention_hook`).
    Attention modules run on the reference backend while recording (the same numbers as
    the fast backends, to their tolerance), so that every per-edge tensor exists.
    Hooks and backends are restored on exit, also after an error.

    The kind and layer of each attention come from the model's ``attention_sites()``
    (:mod:`gnn_transformer.core.interface`: a decoder-only model's self-attention is
    ``"decoder self"``); a module without that method (a bare stack or layer) is labelled from
    the qualified names (:func:`attention_kind`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"record() needs a torch.nn.Module, got {type(model).__name__}")
    sites = getattr(model, "attention_sites", None)
    sites = {site.name: (site.kind, site.layer) for site in sites()} if callable(sites) else {}
    recording = Recording()
    handles, restore = [], []

    def keep(name):
        def hook(module, inputs, output):
            recording.calls.append(ModuleCall(name, _detach(inputs), _detach(output)))
        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(keep(name)))
            if isinstance(module, GraphMultiheadAttention):
                restore.append((module, module.backend))
                module.backend = "reference"
                label = name or type(module).__name__
                kind, layer = sites.get(name) or attention_kind(label)
                handles.append(module.register_attention_hook(_attention_hook(label, recording, kind, layer)))
        yield recording
    finally:
        for handle in handles:
            handle.remove()
        for module, backend in restore:
            module.backend = backend


@contextlib.contextmanager
def record_inference(model: nn.Module) -> Iterator[Recording]:
    """:func:`record` of an inference run: eval mode (no dropout) and no gradients inside the
    block; the model's own mode is restored on exit."""
    was_training = model.training if isinstance(model, nn.Module) else False
    try:
        with record(model) as recording, torch.no_grad():
            model.eval()
            yield recording
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
