r"""What the Hugging Face importers share: weight maps, token graphs from attention masks, outputs.

A padded batch of B sequences of L positions becomes B * L nodes, node ``b * L + i`` for
position ``i`` of sequence ``b``.  The attention mask decides the edges: a position whose mask
is 0 is still a node and a query (the original computes an output there too) but sends no
edge, so it never reaches a real token.  Positions are node attributes and follow the
original's numbering: the column index in the padded tensor unless ``position_ids`` are given
(so under left padding the first real token of a short sequence is not at position 0, exactly
as in the original's plain forward call).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.interface import AttentionSite, DecodingState, InputPart, check_token_ids, sites_from_stacks, source_batch
from ...graphs import complete, edges_from_mask

# Hugging Face activation names -> this library's (see layers.ACTIVATIONS).
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "gelu_fast": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}


def activation_name(name) -> str:
    """The library's name for a Hugging Face activation (``"gelu_new"`` is GELU's tanh approximation)."""
    if not isinstance(name, str) or name not in HF_ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; supported: {sorted(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


@dataclass(frozen=True)
class WeightEntry:
    """One graph tensor = the Hugging Face tensors ``hf`` stacked along dim 0 (each transposed if asked)."""

    graph: str
    hf: tuple[str, ...]
    transpose: bool = False


def per_layer_entries(graph_prefix: str, hf_prefix: str, pairs: list[tuple]) -> list[WeightEntry]:
    """Entries ``(graph suffix, hf suffix or suffixes[, transpose])`` under two prefixes."""
    entries = []
    for pair in pairs:
        graph, hf, transpose = (*pair, False)[:3]
        hf = (hf,) if isinstance(hf, str) else hf
        entries.append(WeightEntry(graph_prefix + graph, tuple(hf_prefix + name for name in hf), transpose))
    return entries


class HFGraphModel(nn.Module, ABC):
    """Base of the imported models: builds from a ``transformers`` model and moves weights both ways."""

    hf_classes: tuple[str, ...] = ()

    @classmethod
    def from_hf(cls, model: nn.Module, **options) -> "HFGraphModel":
        """The graph model holding ``model``'s weights, in its dtype, device and train/eval mode."""
        parameter = next(model.parameters())
        graph = cls(model, **options).to(device=parameter.device, dtype=parameter.dtype)
        graph.load_hf_state_dict(model.state_dict(), expected=_hf_tensor_names(model, graph.hf_buffers))
        return graph.train(model.training)

    hf_buffers: tuple[str, ...] = ()  # buffers of the original that hold weights (BART's final_logits_bias)

    @abstractmethod
    def weight_map(self) -> list[WeightEntry]:
        """How each tensor of the original maps to the graph model."""

    def _graph_tensors(self) -> dict[str, Tensor]:
        return {**dict(self.named_parameters()), **{name: b for name, b in self.named_buffers() if name in
                                                     {e.graph for e in self.weight_map()}}}

    def load_hf_state_dict(self, state: dict[str, Tensor], expected: set[str] | None = None) -> None:
        """Copy Hugging Face tensors into this model through :meth:`weight_map`, checking every key and shape."""
        entries = self.weight_map()
        mine = self._graph_tensors()
        mapped_graph = [e.graph for e in entries]
        mapped_hf = {name for e in entries for name in e.hf}
        problems = []
        if sorted(mapped_graph) != sorted(set(mine)):
            problems.append(f"graph tensors without a source: {sorted(set(mine) - set(mapped_graph))}, "
                            f"unknown: {sorted(set(mapped_graph) - set(mine))}")
        missing = sorted(mapped_hf - set(state))
        if missing:
            problems.append(f"the checkpoint lacks {missing}")
        if expected is not None and expected != mapped_hf:
            problems.append(f"weights of the original that the map does not read: {sorted(expected - mapped_hf)}")
        if problems:
            raise ValueError(f"{type(self).__name__}: the weight map does not fit this model: " + "; ".join(problems))
        with torch.no_grad():
            for entry in entries:
                parts = [state[name].t() if entry.transpose else state[name] for name in entry.hf]
                value = torch.cat(parts) if len(parts) > 1 else parts[0]
                target = mine[entry.graph]
                if value.shape != target.shape:
                    raise ValueError(f"{entry.graph} has shape {tuple(target.shape)} but {list(entry.hf)} give "
                                     f"{tuple(value.shape)}")
                target.copy_(value)

    def hf_state_dict(self, tensors: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """This model's tensors (or ``tensors``, keyed like its parameters, e.g. their gradients) under the
        original's names and shapes."""
        tensors = self._graph_tensors() if tensors is None else tensors
        out = {}
        for entry in self.weight_map():
            value = tensors.get(entry.graph)
            if value is None:
                continue
            for name, part in zip(entry.hf, value.chunk(len(entry.hf))):
                out[name] = part.t() if entry.transpose else part
        return out

    def hf_gradients(self) -> dict[str, Tensor | None]:
        """The gradients of this model's parameters under the original's parameter names."""
        return self.hf_state_dict({name: p.grad for name, p in self.named_parameters()})


def _hf_tensor_names(model: nn.Module, buffers: tuple[str, ...]) -> set[str]:
    return {name for name, _ in model.named_parameters()} | set(buffers)


def tied(a: nn.Module, b: nn.Module) -> bool:
    """Whether two modules of the original share one weight tensor."""
    return a.weight is b.weight


# ---------------------------------------------------------------------------------- inputs and graphs
def token_mask(mask: Tensor | None, batch_size: int, length: int, name: str, device) -> Tensor:
    """A (B, L) 0/1 (or bool) attention mask as bool ``True`` = real token; ``None`` = all real."""
    if mask is None:
        return torch.ones(batch_size, length, dtype=torch.bool, device=device)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (batch_size, length):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a (batch, length) = {(batch_size, length)} tensor of 0 and 1, got {shape} "
                         f"(4-D attention masks are not supported: pass the padding mask)")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must hold only 0 (padding) and 1 (token), got other values")
    return mask.bool().to(device)


def token_ids(input_ids: Tensor | None, name: str = "input_ids") -> Tensor:
    if input_ids is None:
        raise ValueError(f"{name} is required (inputs_embeds is not supported by the graph models)")
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
        raise ValueError(f"{name} must be a (batch, length) integer tensor, got "
                         f"{tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__}")
    return input_ids


def self_graph(mask: Tensor, causal: bool) -> Tensor:
    """Edges ``j -> i`` within each row of a (B, L) batch, from real keys only (and ``j <= i`` if causal)."""
    b, length = mask.shape
    causal_mask = torch.ones(length, length, dtype=torch.bool, device=mask.device).triu(1) if causal else None
    edge_index, _ = edges_from_mask(causal_mask, ~mask, batch_size=b, tgt_len=length, src_len=length)
    return edge_index


def cross_graph(src_mask: Tensor, tgt_len: int) -> Tensor:
    """Bipartite edges from the real source tokens of each row to every target position of that row."""
    b, src_len = src_mask.shape
    edge_index, _ = edges_from_mask(None, ~src_mask, batch_size=b, tgt_len=tgt_len, src_len=src_len)
    return edge_index


def node_positions(position_ids: Tensor | None, batch_size: int, length: int, device) -> Tensor:
    """Position of every node (B * L,): ``position_ids`` broadcast to (B, L), or the column index."""
    if position_ids is None:
        return torch.arange(length, device=device).repeat(batch_size)
    try:
        return position_ids.to(device).expand(batch_size, length).reshape(-1)
    except RuntimeError:
        raise ValueError(f"position_ids of shape {tuple(position_ids.shape)} do not broadcast to (batch, length) = "
                         f"{(batch_size, length)}") from None


def check_unsupported(**given) -> None:
    """Arguments of the original's call that the graph models do not implement must be left unset."""
    used = sorted(name for name, value in given.items() if value not in (None, False))
    if used:
        raise NotImplementedError(f"{used} not supported by the graph model: it computes the whole sequence at once "
                                  f"(no cache, no precomputed embeddings)")


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over labels that are not -100, as the originals compute their loss."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1).to(logits.device),
                           ignore_index=-100)


def shift_right(input_ids: Tensor, start_token_id: int | None, pad_token_id: int | None) -> Tensor:
    """Decoder inputs from labels: start token, then the labels shifted by one (-100 -> padding)."""
    if start_token_id is None or pad_token_id is None:
        raise ValueError("decoder_start_token_id and pad_token_id must be set in the config to shift labels right")
    shifted = input_ids.new_full(input_ids.shape, start_token_id)
    shifted[:, 1:] = input_ids[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


@dataclass
class PaddedPair:
    """A padded source/target batch as node ids, positions and the three token graphs (node ``b * L + i``)."""

    src_ids: Tensor  # (B * S,)
    tgt_ids: Tensor  # (B * T,)
    src_position: Tensor  # (B * S,)
    tgt_position: Tensor  # (B * T,)
    src_edges: Tensor  # complete graph of the real source tokens
    tgt_edges: Tensor  # causal graph, keys limited by the decoder mask
    cross_edges: Tensor  # bipartite graph from the real source tokens
    shape: tuple[int, int, int]  # B, S, T


class Seq2SeqGraphModel(HFGraphModel):
    """Shared call of the encoder-decoder importers: the original's arguments in, ``Seq2SeqLMOutput`` out."""

    shift_input_ids = False  # BART: without decoder inputs or labels, the decoder reads input_ids shifted right

    @abstractmethod
    def logits(self, pair: PaddedPair) -> tuple[Tensor, Tensor]:
        """Logits (B, T, vocab) and the encoder output (B * S, d) of a padded pair."""

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, decoder_attention_mask: Tensor | None = None,
                labels: Tensor | None = None, *, encoder_outputs=None, inputs_embeds=None,
                decoder_inputs_embeds=None, cache=None, past_key_values=None, use_cache=None, return_dict=None):
        """Logits (B, T, vocab) of padded source and target batches, as the original's call returns them."""
        from transformers.modeling_outputs import Seq2SeqLMOutput

        check_unsupported(encoder_outputs=encoder_outputs, inputs_embeds=inputs_embeds, cache=cache,
                          decoder_inputs_embeds=decoder_inputs_embeds, past_key_values=past_key_values,
                          use_cache=use_cache)
        input_ids = token_ids(input_ids)
        if decoder_input_ids is None:
            source = labels if labels is not None else (input_ids if self.shift_input_ids else None)
            if source is None:
                raise ValueError(f"{type(self).__name__} needs decoder_input_ids (or labels, shifted right into them)")
            start = getattr(self.config, "decoder_start_token_id", None)
            decoder_input_ids = shift_right(source, start, self.config.pad_token_id)
        decoder_input_ids = token_ids(decoder_input_ids, "decoder_input_ids")
        (b, s), t = input_ids.shape, decoder_input_ids.size(1)
        device = input_ids.device
        src_mask = token_mask(attention_mask, b, s, "attention_mask", device)
        tgt_mask = token_mask(decoder_attention_mask, b, t, "decoder_attention_mask", device)
        pair = PaddedPair(input_ids.reshape(-1), decoder_input_ids.reshape(-1), node_positions(None, b, s, device),
                          node_positions(None, b, t, device), self_graph(src_mask, causal=False),
                          self_graph(tgt_mask, causal=True), cross_graph(src_mask, t), (b, s, t))
        logits, memory = self.logits(pair)
        loss = None if labels is None else cross_entropy(logits, labels)
        return Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=memory.view(b, s, -1))

    # ------------------------------------------------------------------ the tools' interface
    @abstractmethod
    def encode_sources(self, tokens: Tensor, position: Tensor, edge_index: Tensor) -> Tensor:
        """The encoder's output (S, d) for source nodes on their complete graphs."""

    @abstractmethod
    def decoder_logits(self, state: DecodingState, tokens: Tensor, position: Tensor, key_position: Tensor,
                       edge_index: Tensor, cross_edge_index: Tensor) -> tuple[Tensor, list[dict]]:
        """Logits (n, vocab) and per-layer attention weights of new target nodes."""

    def attention_sites(self) -> list[AttentionSite]:
        """Encoder self-attention, decoder self-attention and cross-attention of every layer."""
        return sites_from_stacks(self, [("encoder", "encoder self"), ("decoder", "decoder self")])

    input_positions: tuple[str, str] | None = None  # (encoder, decoder) learned position modules, if any
    embedding_formula = "e_i = W[token_i]"

    def input_parts(self) -> list[InputPart]:
        """The shared token embedding of each side (its first call: sources, its last: targets) and, if the
        model adds absolute positions, each side's position table."""
        parts = []
        for side, call, index in (("source", 0, 0), ("target", -1, 1)):
            parts.append(InputPart(side, "embedding", "shared", call, self.embedding_formula))
            if self.input_positions is not None:
                parts.append(InputPart(side, "positional", self.input_positions[index], 0, "PE_i = P[pos_i]   (learned)"))
        return parts

    def begin_decoding(self, inputs, *, bos: int | None = None):
        """Encode the sources once; every target starts with ``bos`` (default: ``config.decoder_start_token_id``)."""
        bos = getattr(self.config, "decoder_start_token_id", None) if bos is None else bos
        if bos is None:
            raise ValueError(f"{type(self).__name__}: the config has no decoder_start_token_id; pass bos=")
        check_token_ids(inputs, self.config.vocab_size, "sources")
        check_token_ids([torch.tensor([bos])], self.config.vocab_size, "bos")
        device = self.lm_head.weight.device
        tokens, position, lengths = source_batch(inputs, device)
        memory = self.encode_sources(tokens, position, complete(lengths))  # (S, d)
        state = DecodingState.seq2seq(len(self.decoder.layers), memory, position, lengths)
        return state, [torch.tensor([bos], device=device) for _ in inputs]

    def decode_step(self, state: DecodingState, tokens: Tensor, position: Tensor, edge_index: Tensor, group: Tensor):
        """Logits of new target nodes (n, V) and their attention weights per layer ``{"self", "cross"}``."""
        key_position = state.grow(position)
        return self.decoder_logits(state, tokens, position, key_position, edge_index, state.cross_edges(group))
