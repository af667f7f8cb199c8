r"""The Universal Transformer (Dehghani et al., arXiv:1807.03819) on token graphs, with adaptive computation time.

One encoder layer and one decoder layer, each applied :math:`T` times with shared weights.  Before
every step :math:`t = 1..T` each node adds its *coordinate embedding*, sinusoidal in its position
and in the step (the paper's section 2.1):

.. math::

    P^t_{p, 2j} = \sin(p / 10000^{2j/d}) + \sin(t / 10000^{2j/d}), \qquad
    P^t_{p, 2j+1} = \cos(p / 10000^{2j/d}) + \cos(t / 10000^{2j/d}),

    h^t = \operatorname{layer}_G(h^{t-1} + P^t), \qquad h^0 = \operatorname{embed}(x)

where :math:`\operatorname{layer}_G` is :class:`~gnn_transformer.GraphTransformerEncoderLayer` (or the
decoder layer, which also attends to the memory) passing messages along the edges of the graph
:math:`G`: complete, causal and bipartite as in the paper, or any pattern (one edge set for all
steps, or a list with one per step).  The depth is a loop over the same module, so every step is
one more round of message passing on the same graph.

With adaptive computation time (:mod:`~gnn_transformer.variants.act`) each node halts on its own
after :math:`N_i \le T` steps; its output is the ACT-weighted sum of its states, and a halted node
keeps its state and keeps sending messages.  ``act=False`` (halting disabled) runs all :math:`T`
steps: the model then equals :math:`T` tied layers (with ``step_encoding=None`` exactly a
:class:`~gnn_transformer.GraphTransformerModel` whose layers are copies of the shared one).

:class:`GraphUniversalTransformer` implements the tools' interface
(:mod:`gnn_transformer.core.interface`): its attention sites are those of the shared layers
(``encoder.layers.0.self_attn`` ...), called once per step; decoding keeps one key/value cache per
step, so a growing graph equals recomputation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.init import xavier_uniform_

from ..core.calls import prepare_edges, source_count, with_weights
from ..core.embedding import SinusoidalPositionalEncoding, TokenEmbedding, sinusoidal_encoding
from ..core.interface import AttentionSite, DecodingState, check_token_ids, sites_from_stacks, source_batch
from ..core.layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer
from ..core.model import TIES, _TokenModel, _edge_bias, _require
from ..core.stacks import per_layer
from ..graphs.builders import complete
from .act import ACTState, HaltingError, HaltingUnit, PonderResult, act_step, check_threshold

__all__ = ["CoordinateEncoding", "UniversalStack", "UniversalOutput", "GraphUniversalTransformer", "STEP_ENCODINGS"]

STEP_ENCODINGS = ("sinusoidal", None)


class CoordinateEncoding(nn.Module):
    r"""The coordinate embedding :math:`P^t_p = PE(p) + PE(t)` of each node at step ``t`` (no parameters).

    Shapes: position (N,) integer -> (N, d_model) in ``dtype``.
    """

    def __init__(self, d_model: int, base: float = 10000.0) -> None:
        super().__init__()
        self.d_model, self.base = d_model, base

    def forward(self, position: Tensor, step: int, dtype: torch.dtype = torch.float32) -> Tensor:
        time = sinusoidal_encoding(position.new_full((1,), step), self.d_model, self.base, dtype)  # (1, d_model)
        return sinusoidal_encoding(position, self.d_model, self.base, dtype) + time  # (N, d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base}"


def _check_steps(num_steps) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps (T, the recurrent depth) must be an integer of at least 1, got {num_steps!r}")
    return num_steps


class UniversalStack(nn.Module):
    r"""One layer applied ``num_steps`` times with shared weights, optionally with ACT per node, then a norm.

    Args:
        layer: a :class:`~gnn_transformer.GraphTransformerEncoderLayer` or
            :class:`~gnn_transformer.GraphTransformerDecoderLayer` (kept, not copied, as ``layers[0]``).
        num_steps: T, the recurrent depth (ACT's maximum of steps).
        norm: final normalisation, or ``None``.
        coordinates: the coordinate embedding added before every step (:class:`CoordinateEncoding`),
            or ``None`` (nothing added).
        halting: the :class:`~gnn_transformer.variants.act.HaltingUnit`, or ``None`` (no ACT possible).
        act_threshold: ACT's halting threshold in (0, 1].

    Call: ``stack(x, edge_index, edge_bias=None, return_attention_weights=False, *, position, act,
    memory=None, cross_edge_index=None, cross_edge_bias=None, memory_position=None, cache=None)``
    returns ``(y, weights, ponder)``: y (N, d_model); weights a list with one entry per step (the
    layer's weights) or ``None``; ponder a :class:`~gnn_transformer.variants.act.PonderResult` or
    ``None`` without ACT.  ``cache``: one layer cache per step (incremental decoding).
    """

    def __init__(self, layer: nn.Module, num_steps: int, norm: nn.Module | None = None, *,
                 coordinates: nn.Module | None = None, halting: HaltingUnit | None = None,
                 act_threshold: float = 0.99) -> None:
        super().__init__()
        if not isinstance(layer, (GraphTransformerEncoderLayer, GraphTransformerDecoderLayer)):
            raise TypeError(f"layer must be a GraphTransformerEncoderLayer or GraphTransformerDecoderLayer, "
                            f"got {type(layer).__name__}")
        self.layers = nn.ModuleList([layer])  # one layer, shared by every step
        self.num_steps = _check_steps(num_steps)
        self.norm = norm
        self.coordinates = coordinates
        self.halting = halting
        self.act_threshold = check_threshold(act_threshold)
        self.is_decoder = isinstance(layer, GraphTransformerDecoderLayer)

    def forward(self, x: Tensor, edge_index, edge_bias=None, return_attention_weights: bool = False, *,
                position: Tensor, act: bool, memory: Tensor | None = None, cross_edge_index=None,
                cross_edge_bias=None, memory_position: Tensor | None = None, cache: list | None = None):
        if act and self.halting is None:
            raise HaltingError("act=True needs a halting unit, and this stack was built without one; build the "
                               "model with act=True or run it with act=False (all num_steps steps)")
        layer, n = self.layers[0], self.num_steps
        caches = per_layer(cache, n, "cache")
        self_caches = [c.get("self") if self.is_decoder and c is not None else c for c in caches]
        memo, cross_memo = {}, {}
        edges = [prepare_edges(e, source_count(c, x.size(0)), x.size(0), layer.self_attn, memo=memo)
                 for e, c in zip(per_layer(edge_index, n, "edge_index"), self_caches)]
        biases = per_layer(edge_bias, n, "edge_bias")
        if self.is_decoder:
            num_memory = 0 if memory is None else memory.size(0)
            cross_caches = [None if c is None else c.get("cross") for c in caches]
            cross_edges = [prepare_edges(e, source_count(c, num_memory), x.size(0), layer.multihead_attn,
                                         memo=cross_memo)
                           for e, c in zip(per_layer(cross_edge_index, n, "cross_edge_index"), cross_caches)]
            cross_biases = per_layer(cross_edge_bias, n, "cross_edge_bias")
        state = ACTState.start(x) if act else None
        h, weights = x, []
        for step in range(n):
            u = h if self.coordinates is None else h + self.coordinates(position, step + 1, dtype=h.dtype)  # (N, d)
            if self.is_decoder:
                out = layer(u, memory, edge_index=edges[step], cross_edge_index=cross_edges[step],
                            edge_bias=biases[step], cross_edge_bias=cross_biases[step],
                            return_attention_weights=return_attention_weights, position=position,
                            memory_position=memory_position, cache=caches[step])
            else:
                out = layer(u, edge_index=edges[step], edge_bias=biases[step],
                            return_attention_weights=return_attention_weights, position=position,
                            cache=caches[step])
            out, step_weights = with_weights(out, return_attention_weights)
            weights.append(step_weights)
            if act:
                state = act_step(state, self.halting(out), out, self.act_threshold, last=step == n - 1)
                h = state.state  # (N, d_model): halted nodes keep theirs
            else:
                h = out
        y = state.output if act else h  # (N, d_model)
        if self.norm is not None:
            y = self.norm(y)
        ponder = PonderResult(state.steps, state.remainder) if act else None
        return y, (weights if return_attention_weights else None), ponder

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, act_threshold={self.act_threshold}"


@dataclass
class UniversalOutput:
    """What :meth:`GraphUniversalTransformer.run` returns.

    Attributes:
        logits: (num_target_tokens, tgt_vocab_size).
        source_ponder, target_ponder: :class:`~gnn_transformer.variants.act.PonderResult` of the
            encoder's and the decoder's nodes (steps per node), ``None`` with halting disabled.
        weights: ``{"encoder": [per step], "decoder": [per step]}`` attention weights, or ``None``.
    """

    logits: Tensor
    source_ponder: PonderResult | None
    target_ponder: PonderResult | None
    weights: dict | None = None


class GraphUniversalTransformer(_TokenModel):
    r"""The encoder-decoder Universal Transformer with adaptive computation time, as message passing.

    Args:
        src_vocab_size, tgt_vocab_size, d_model, nhead, dim_feedforward, dropout, activation,
        layer_norm_eps, norm_first, bias, tie_weights, backend: as
            :class:`~gnn_transformer.GraphTransformerModel`.
        num_steps: T, the steps of the shared encoder layer and of the shared decoder layer
            (ACT's maximum).
        act: build halting units and halt per node by default (``forward(..., act=False)`` still
            runs all T steps).
        act_threshold: halting threshold in (0, 1] (Graves' :math:`1 - \epsilon`).
        ponder_penalty: :math:`\tau`, the weight of the ponder cost in the training loss.
        halting_bias_init: initial bias of the halting units.
        step_encoding: ``"sinusoidal"`` adds the coordinate embedding (position and step) before every
            step, as the paper; ``None`` adds the positional encoding once to the embeddings, as
            the Transformer.

    Input: a ``HeteroData`` batch as :class:`~gnn_transformer.GraphTransformerModel`'s
    (:func:`gnn_transformer.graphs.seq2seq_batch`); an ``edge_index`` or ``edge_bias`` may be a
    list with one entry per step.

    Returns: logits (num_target_tokens, tgt_vocab_size); :meth:`run` also returns the steps each
    node took.

    Shapes: source tokens (S,), target tokens (N,) -> logits (N, V); steps (S,) and (N,).
    """

    auxiliary_loss = True  # forward(batch, return_auxiliary_loss=True): (logits, ponder cost), see training.loop

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int | None = None,
        d_model: int = 512,
        nhead: int = 8,
        num_steps: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
        tie_weights: str = "none",
        device=None,
        dtype=None,
        *,
        act: bool = True,
        act_threshold: float = 0.99,
        ponder_penalty: float = 0.01,
        halting_bias_init: float = 1.0,
        step_encoding: str | None = "sinusoidal",
        backend: str = "reference",
    ) -> None:
        super().__init__()
        tgt_vocab_size = src_vocab_size if tgt_vocab_size is None else tgt_vocab_size
        _check_steps(num_steps)
        check_threshold(act_threshold)
        if tie_weights not in TIES:
            raise ValueError(f"tie_weights must be one of {TIES}, got {tie_weights!r}")
        if tie_weights == "all" and src_vocab_size != tgt_vocab_size:
            raise ValueError(f"tie_weights='all' shares one embedding, so it needs one vocabulary; got "
                             f"src_vocab_size={src_vocab_size} and tgt_vocab_size={tgt_vocab_size}")
        if step_encoding not in STEP_ENCODINGS:
            raise ValueError(f"step_encoding must be one of {STEP_ENCODINGS}, got {step_encoding!r}")
        if not ponder_penalty >= 0:
            raise ValueError(f"ponder_penalty must be at least 0, got {ponder_penalty!r}")
        factory = {"device": device, "dtype": dtype}
        self.tie_weights, self.default_act, self.ponder_penalty = tie_weights, bool(act), float(ponder_penalty)
        self.step_encoding = step_encoding
        layer_args = dict(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                          activation=activation, layer_norm_eps=layer_norm_eps, norm_first=norm_first, bias=bias,
                          backend=backend, **factory)

        def stack(layer):
            return UniversalStack(
                layer, num_steps, nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory),
                coordinates=CoordinateEncoding(d_model) if step_encoding else None,
                halting=HaltingUnit(d_model, halting_bias_init, **factory) if act else None,
                act_threshold=act_threshold)

        self.encoder = stack(GraphTransformerEncoderLayer(**layer_args))
        self.decoder = stack(GraphTransformerDecoderLayer(**layer_args))
        for name, parameter in self.named_parameters():  # Xavier uniform, as torch.nn.Transformer
            if parameter.dim() > 1 and ".halting." not in f".{name}":
                xavier_uniform_(parameter)
        self.tgt_embed = TokenEmbedding(tgt_vocab_size, d_model, **factory)
        self.src_embed = self.tgt_embed if tie_weights == "all" else TokenEmbedding(src_vocab_size, d_model, **factory)
        self.positional = SinusoidalPositionalEncoding(d_model)
        self.dropout = nn.Dropout(dropout)
        self.generator = nn.Linear(d_model, tgt_vocab_size, bias=bias, **factory)
        if tie_weights != "none":
            self.generator.weight = self.tgt_embed.embedding.weight

    @property
    def num_steps(self) -> int:
        return self.encoder.num_steps

    def _act(self, act: bool | None) -> bool:
        return self.default_act if act is None else bool(act)

    def _inputs(self, embedding: TokenEmbedding, tokens: Tensor, position: Tensor) -> Tensor:
        """dropout(embedding), plus the positional encoding once when no step encoding adds it every step."""
        if self.step_encoding is None:
            return self._embed(embedding, tokens, position)
        return self.dropout(embedding(tokens))  # (N, d_model)

    def encode(self, batch, act: bool | None = None, return_attention_weights: bool = False):
        """(memory (S, d_model), per-step weights or ``None``, source ponder or ``None``)."""
        _require(batch["src"], ("x", "position"), "batch['src']")
        store, position = batch["src", "to", "src"], batch["src"].position
        x = self._inputs(self.src_embed, batch["src"].x, position)
        return self.encoder(x, store.edge_index, _edge_bias(store), return_attention_weights, position=position,
                            act=self._act(act))

    def run(self, batch, act: bool | None = None, return_attention_weights: bool = False) -> UniversalOutput:
        """Logits, the steps every source and target node took, and (if asked) the attention weights per step."""
        memory, encoder_weights, source_ponder = self.encode(batch, act, return_attention_weights)
        _require(batch["tgt"], ("x", "position"), "batch['tgt']")
        self_store, cross_store = batch["tgt", "to", "tgt"], batch["src", "to", "tgt"]
        position = batch["tgt"].position
        x = self._inputs(self.tgt_embed, batch["tgt"].x, position)
        hidden, decoder_weights, target_ponder = self.decoder(
            x, self_store.edge_index, _edge_bias(self_store), return_attention_weights, position=position,
            act=self._act(act), memory=memory, cross_edge_index=cross_store.edge_index,
            cross_edge_bias=_edge_bias(cross_store), memory_position=batch["src"].position)
        weights = {"encoder": encoder_weights, "decoder": decoder_weights} if return_attention_weights else None
        return UniversalOutput(self.generator(hidden), source_ponder, target_ponder, weights)

    def forward(self, batch, act: bool | None = None, return_auxiliary_loss: bool = False):
        r"""Logits (num_target_tokens, tgt_vocab_size); with ``return_auxiliary_loss`` also the ponder
        cost :math:`\tau \sum_i \rho_i` summed over all source and target nodes (0 without ACT)."""
        out = self.run(batch, act)
        if not return_auxiliary_loss:
            return out.logits
        cost = out.logits.new_zeros(())
        for ponder in (out.source_ponder, out.target_ponder):
            if ponder is not None:
                cost = cost + ponder.cost.sum()
        return out.logits, self.ponder_penalty * cost

    # ------------------------------------------------------------------ the tools' interface
    @torch.no_grad()
    def ponder_steps(self, batch) -> dict:
        """The ponder map: the steps every node took, ``{"source": (S,), "target": (N,), "max_steps": T}``
        (all T with halting disabled).  The optional ``PONDERING`` part of :mod:`gnn_transformer.core.interface`."""
        out = self.run(batch)
        full = {"source": batch["src"].x, "target": batch["tgt"].x}
        steps = {side: (ponder.steps if ponder is not None else torch.full_like(full[side], self.num_steps))
                 for side, ponder in (("source", out.source_ponder), ("target", out.target_ponder))}
        return {**steps, "max_steps": self.num_steps}

    def attention_sites(self) -> list[AttentionSite]:
        """The shared layers' attentions (layer 0), each called once per step."""
        return sites_from_stacks(self, [("encoder", "encoder self"), ("decoder", "decoder self")])

    def begin_decoding(self, inputs, *, bos: int | None = None):
        """Encode the sources once (with the model's default ``act``); one key/value cache per decoder step.

        The state's ``extra`` keeps ``"source_steps"`` (S,) and, growing with every decoding step,
        ``"target_steps"``: the steps each node took.
        """
        from torch_geometric.data import HeteroData

        if bos is None:
            raise ValueError("an encoder-decoder model starts every target with a start token: pass bos=")
        check_token_ids(inputs, self.src_embed.embedding.num_embeddings, "sources")
        check_token_ids([torch.tensor([bos])], self.generator.out_features, "bos")
        device = self.generator.weight.device
        tokens, position, lengths = source_batch(inputs, device)
        batch = HeteroData()
        batch["src"].x, batch["src"].position = tokens, position  # (S,), (S,)
        batch["src", "to", "src"].edge_index = complete(lengths)
        memory, _, ponder = self.encode(batch)
        state = DecodingState.seq2seq(self.num_steps, memory, position, lengths)
        state.extra["source_steps"] = None if ponder is None else ponder.steps
        state.extra["target_steps"] = torch.empty(0, dtype=torch.long, device=device)
        return state, [torch.tensor([bos], device=device) for _ in inputs]

    def decode_step(self, state: DecodingState, tokens: Tensor, position: Tensor, edge_index: Tensor, group: Tensor):
        """Logits of new target nodes (n, V) and their attention weights per step ``{"self", "cross"}``."""
        state.grow(position)
        x = self._inputs(self.tgt_embed, tokens, position)  # (n, d_model)
        act = self._act(None)
        hidden, weights, ponder = self.decoder(
            x, edge_index, None, True, position=position, act=act, memory=state.memory,
            cross_edge_index=state.cross_edges(group), memory_position=state.memory_position, cache=state.cache)
        if ponder is not None:
            state.extra["target_steps"] = torch.cat([state.extra["target_steps"], ponder.steps])
        return self.generator(hidden), weights
