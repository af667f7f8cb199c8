r"""Complete models: embeddings, positional encodings, graph stacks and the output softmax.

* :class:`GraphTransformerModel` -- the encoder-decoder model of "Attention Is All You
  Need" (arXiv:1706.03762, figure 1) on a seq2seq batch (``HeteroData`` from
  :func:`gnn_transformer.graphs.seq2seq_batch`).
* :class:`GraphSequenceModel` -- one stack of layers on one graph, assembled from its parts
  (token embedding, positional encoding, the stack with its final norm, the output layer,
  and the graph it attends over).  :class:`GraphEncoderModel` (encoder-only, BERT-like,
  arXiv:1810.04805: the complete graph of each sequence) and :class:`GraphDecoderModel`
  (decoder-only, GPT-like, arXiv:2005.14165: the causal graph) build it from the paper's parts.

Each returns logits per node; ``log_probs`` and ``probs`` give the prediction
distributions :math:`\operatorname{softmax}(h W_\text{out} + b)` over the vocabulary.
Both implement the tools' interface (:mod:`gnn_transformer.core.interface`):
``attention_sites``, ``begin_decoding`` and ``decode_step``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..graphs.builders import causal, complete
from ..graphs.patterns.registry import as_sequence_graph
from .embedding import SinusoidalPositionalEncoding, TokenEmbedding
from .interface import AttentionSite, DecodingState, InputPart, check_token_ids, sites_from_stacks, source_batch
from .layers import GraphTransformerEncoderLayer
from .stacks import GraphTransformer, GraphTransformerEncoder

__all__ = ["GraphTransformerModel", "GraphSequenceModel", "paper_parts", "GraphEncoderModel", "GraphDecoderModel"]

TIES = ("none", "output", "all")
_EMBEDDING = "e_i = E[token_i] · √d_model"
_SINUSOID = "PE(pos, 2k) = sin(pos / 10000^(2k / d_model)),   PE(pos, 2k+1) = cos(pos / 10000^(2k / d_model))"


def _edge_bias(store):
    return store["edge_bias"] if "edge_bias" in store else None


def _require(store, keys: tuple[str, ...], what: str) -> None:
    missing = [key for key in keys if key not in store]
    if missing:
        raise ValueError(f"{what} is missing {missing}; build batches with gnn_transformer.graphs")


class _TokenModel(nn.Module):
    """Shared input path: dropout(token embedding * sqrt(d_model) + positional encoding)."""

    def _embed(self, embedding: TokenEmbedding, tokens: Tensor, position: Tensor) -> Tensor:
        x = embedding(tokens)  # (N, d_model)
        return self.dropout(x + self.positional(position, dtype=x.dtype))

    def log_probs(self, *args, **kwargs) -> Tensor:
        """Log-probabilities of the next token at each node, (N, vocab)."""
        return torch.log_softmax(self(*args, **kwargs), dim=-1)

    def probs(self, *args, **kwargs) -> Tensor:
        """Prediction probabilities at each node, (N, vocab); rows sum to 1."""
        return torch.softmax(self(*args, **kwargs), dim=-1)


class GraphTransformerModel(_TokenModel):
    r"""The encoder-decoder Transformer of the paper, as message passing.

    Args:
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size (default: ``src_vocab_size``).
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout,
        activation, layer_norm_eps, norm_first, bias: as :class:`torch.nn.Transformer`.
        tie_weights: ``"none"``; ``"output"`` shares the target embedding with the output
            layer; ``"all"`` also shares it with the source embedding (the paper's three-way
            sharing, section 3.4; needs one vocabulary).
        backend: attention backend of every layer.

    Input: a ``HeteroData`` batch with ``batch['src'].x``/``.position``,
    ``batch['tgt'].x``/``.position`` and the edge types ``('src','to','src')``,
    ``('tgt','to','tgt')``, ``('src','to','tgt')`` (an optional ``edge_bias`` per edge type
    is used as a per-edge score bias).  An ``edge_index`` or ``edge_bias`` may also be a list
    with one entry per layer (any pattern of :mod:`gnn_transformer.graphs.patterns`); PyG does not
    collate lists, so set them on the collated batch.

    Returns: logits (num_target_tokens, tgt_vocab_size).

    Example::

        >>> model = GraphTransformerModel(11, d_model=32, nhead=4, num_encoder_layers=2,
        ...                               num_decoder_layers=2, dim_feedforward=64)
        >>> batch = graphs.seq2seq_batch([torch.tensor([1, 2, 3])], [torch.tensor([0, 1])])
        >>> model(batch).shape
        torch.Size([2, 11])
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int | None = None,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
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
        backend: str = "reference",
    ) -> None:
        super().__init__()
        tgt_vocab_size = src_vocab_size if tgt_vocab_size is None else tgt_vocab_size
        if tie_weights not in TIES:
            raise ValueError(f"tie_weights must be one of {TIES}, got {tie_weights!r}")
        if tie_weights == "all" and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"tie_weights='all' shares one embedding, so it needs one vocabulary; got "
                f"src_vocab_size={src_vocab_size} and tgt_vocab_size={tgt_vocab_size}"
            )
        factory = {"device": device, "dtype": dtype}
        self.tie_weights = tie_weights
        self.transformer = GraphTransformer(
            d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout, activation,
            layer_norm_eps=layer_norm_eps, norm_first=norm_first, bias=bias, backend=backend, **factory,
        )
        self.tgt_embed = TokenEmbedding(tgt_vocab_size, d_model, **factory)
        self.src_embed = self.tgt_embed if tie_weights == "all" else TokenEmbedding(src_vocab_size, d_model, **factory)
        self.positional = SinusoidalPositionalEncoding(d_model)
        self.dropout = nn.Dropout(dropout)
        self.generator = nn.Linear(d_model, tgt_vocab_size, bias=bias, **factory)
        if tie_weights != "none":
            self.generator.weight = self.tgt_embed.embedding.weight

    def encode(self, batch) -> Tensor:
        """Memory: the encoder's output for every source token, (num_source_tokens, d_model)."""
        _require(batch["src"], ("x", "position"), "batch['src']")
        store = batch["src", "to", "src"]
        src = self._embed(self.src_embed, batch["src"].x, batch["src"].position)
        return self.transformer.encoder(src, store.edge_index, _edge_bias(store), position=batch["src"].position)

    def decode(self, batch, memory: Tensor | None, return_attention_weights: bool = False, cache: list | None = None):
        """Decoder output for every target token, (num_target_tokens, d_model).

        With ``cache`` (one ``{"self", "cross"}`` pair of :class:`KeyValueCache` per layer) the batch
        holds only new target nodes and its edges index all cached nodes: incremental decoding.
        """
        _require(batch["tgt"], ("x", "position"), "batch['tgt']")
        self_store, cross_store = batch["tgt", "to", "tgt"], batch["src", "to", "tgt"]
        tgt = self._embed(self.tgt_embed, batch["tgt"].x, batch["tgt"].position)
        src_position = batch["src"].position if "position" in batch["src"] else None
        return self.transformer.decoder(
            tgt, memory, self_store.edge_index, cross_store.edge_index, _edge_bias(self_store),
            _edge_bias(cross_store), return_attention_weights, position=batch["tgt"].position,
            memory_position=src_position, cache=cache,
        )

    def forward(self, batch) -> Tensor:
        """Logits of the next target token at every target node, (num_target_tokens, tgt_vocab_size)."""
        return self.generator(self.decode(batch, self.encode(batch)))

    # ------------------------------------------------------------------ the tools' interface
    def attention_sites(self) -> list[AttentionSite]:
        """Encoder self-attention, decoder self-attention and cross-attention of every layer."""
        return sites_from_stacks(self, [("transformer.encoder", "encoder self"), ("transformer.decoder", "decoder self")])

    def input_parts(self) -> list[InputPart]:
        """Token embeddings (× √d_model) and sinusoidal encodings of the sources, then of the targets."""
        source = "tgt_embed" if self.src_embed is self.tgt_embed else "src_embed"  # one module when tied
        return [InputPart(side, role, name, call, formula) for side, call, embed in
                (("source", 0, source), ("target", -1, "tgt_embed"))
                for role, name, formula in (("embedding", embed, _EMBEDDING), ("positional", "positional", _SINUSOID))]

    def begin_decoding(self, inputs, *, bos: int | None = None):
        """Encode the sources once; every target starts with ``bos`` (see :mod:`~gnn_transformer.core.interface`)."""
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
        state = DecodingState.seq2seq(len(self.transformer.decoder.layers), self.encode(batch), position, lengths)
        return state, [torch.tensor([bos], device=device) for _ in inputs]

    def decode_step(self, state: DecodingState, tokens: Tensor, position: Tensor, edge_index: Tensor, group: Tensor):
        """Logits of new target nodes (n, V) and their attention weights per layer ``{"self", "cross"}``."""
        state.grow(position)
        tgt = self._embed(self.tgt_embed, tokens, position)  # (n, d_model)
        hidden, weights = self.transformer.decoder(
            tgt, state.memory, edge_index, state.cross_edges(group), None, None, True, position=position,
            memory_position=state.memory_position, cache=state.cache)
        return self.generator(hidden), weights


class GraphSequenceModel(_TokenModel):
    r"""A single-stack model (encoder-only or decoder-only) assembled from its parts.

    .. math::

        h^0_i = \operatorname{dropout}(\operatorname{embed}(t_i) + \operatorname{positional}(p_i)), \qquad
        h = \operatorname{encoder}_G(h^0), \qquad \text{logits}_i = \operatorname{generator}(h_i)

    where the stack passes messages along the edges of the graph :math:`G` the model attends
    over: the complete graph of each sequence for an encoder-only (BERT-like, arXiv:1810.04805)
    model, the causal graph for a decoder-only (GPT-like, arXiv:2005.14165) one, or any
    pattern.  :class:`GraphEncoderModel` and :class:`GraphDecoderModel` build it with the
    paper's parts (:func:`paper_parts`); :class:`~gnn_transformer.variants.GraphVariantModel`
    with the variants' parts.

    Args:
        embed: token embedding, token ids (N,) -> (N, d_model).
        encoder: the stack of layers with its final norm, called
            ``encoder(x, edge_index, edge_bias, return_attention_weights, position=, cache=)``.
        generator: the output layer, (N, d_model) -> (N, vocab) logits.
        graph: the graph the model attends over: a builder such as ``graphs.complete`` or
            ``graphs.causal``, a pattern (``graphs.sequence_graph("window", radius=2)``), a name
            of the pattern registry, or ``None`` (not declared); kept as a
            :class:`~gnn_transformer.graphs.SequenceGraph` in :attr:`graph`.
        positional: absolute position encoding, ``positional(position, dtype=)`` -> (N, d_model),
            added to the embeddings; ``None`` for none.
        relative_bias: a per-edge score bias from positions, ``relative_bias(edge_index, position,
            key_position=None)`` -> (num_edges, H), computed once for all layers (ALiBi, T5); ``None``
            for none (``key_position``: the sources' positions when they differ from the targets', as
            in a decoding step).
        dropout: dropout on the summed input embeddings.

    Input: a PyG ``Data`` (or collated batch) with ``x`` token ids, ``position`` and
    ``edge_index`` (one edge set, or a list with one per layer, set on the collated batch),
    optionally ``edge_bias``.  Build it with ``graphs.sequence_data(tokens, model.graph)``.

    Returns: logits (N, vocab).

    Shapes: x, position (N,) -> hidden (N, d_model) -> logits (N, vocab); edge_index (2, num_edges).

    Tools ask the model, not its class: :attr:`graph` (its name, and ``graph.causal``: whether
    it can decode one token at a time) and :meth:`graph_for`.
    """

    def __init__(self, embed: nn.Module, encoder: nn.Module, generator: nn.Module, *, graph=None,
                 positional: nn.Module | None = None, relative_bias: nn.Module | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.embed = embed
        self.positional = positional
        self.relative_bias = relative_bias
        self.dropout = nn.Dropout(dropout)
        self.generator = generator
        self.graph = as_sequence_graph(graph)

    def graph_for(self, lengths) -> Tensor:
        """The edges this model attends over for a ragged batch of sequences, (2, num_edges).

        Raises ``ValueError`` when the model was built without a graph.
        """
        if self.graph is None:
            raise ValueError(f"this {type(self).__name__} was built without a graph (graph=None); build it with "
                             "graph=graphs.complete, graphs.causal or a pattern")
        return self.graph(lengths)

    def embed_nodes(self, tokens: Tensor, position: Tensor) -> Tensor:
        """The input of the stack: dropout(embedding + absolute positions), (N, d_model)."""
        x = self.embed(tokens)  # (N, d_model)
        if self.positional is not None:
            x = x + self.positional(position, dtype=x.dtype)
        return self.dropout(x)

    def edge_bias(self, edge_index, position: Tensor, dtype: torch.dtype) -> Tensor | None:
        """The relative position bias of every edge, computed once for all layers, (num_edges, H); ``None``
        without a ``relative_bias`` part."""
        if self.relative_bias is None:
            return None
        return self.relative_bias(edge_index, position).to(dtype)  # (num_edges, H)

    def hidden(self, data, return_attention_weights: bool = False, cache: list | None = None):
        """Final hidden state of every token, (N, d_model); ``cache`` (one per layer) as in the stack's call."""
        _require(data, ("x", "position", "edge_index"), "data")
        if cache is not None and self.relative_bias is not None:
            raise NotImplementedError("relative position biases need the positions of every cached token, which "
                                      "hidden() does not have; decode one step with decode_step(state, ...), whose "
                                      "state keeps them (gnn_transformer.core.interface)")
        x = self.embed_nodes(data.x, data.position)
        bias = self.edge_bias(data.edge_index, data.position, x.dtype)
        if "edge_bias" in data:
            bias = data.edge_bias if bias is None else bias + data.edge_bias
        return self.encoder(x, data.edge_index, bias, return_attention_weights, position=data.position, cache=cache)

    def forward(self, data) -> Tensor:
        """Logits per token, (N, vocab_size); ``data`` holds ``x``, ``position``, ``edge_index``."""
        return self.generator(self.hidden(data))

    # ------------------------------------------------------------------ the tools' interface
    def attention_sites(self) -> list[AttentionSite]:
        """One self-attention per layer: ``"decoder self"`` on a causal graph, ``"encoder self"`` otherwise."""
        kind = "decoder self" if self.graph is not None and self.graph.causal else "encoder self"
        return sites_from_stacks(self, [("encoder", kind)], graph=self.graph)

    def input_parts(self) -> list[InputPart]:
        """The token embedding and, if the model adds absolute positions, their encoding."""
        parts = [InputPart("tokens", "embedding", "embed", 0, "e_i = E[token_i]")]
        if self.positional is not None:
            sinusoid = isinstance(self.positional, SinusoidalPositionalEncoding)
            parts.append(InputPart("tokens", "positional", "positional", 0,
                                   _SINUSOID if sinusoid else "PE_i = PE[pos_i]   (learned)"))
        return parts

    def begin_decoding(self, inputs, *, bos: int | None = None):
        """The prompts are the first tokens (``bos`` is not used); needs a causal graph."""
        if self.graph is None or not self.graph.causal:
            raise ValueError(f"this {type(self).__name__} attends over {self.graph!r}, not a causal graph, so it "
                             "cannot decode one token at a time; build it with graph=graphs.causal")
        check_token_ids(inputs, self.generator.out_features, "prompts")
        device = self.generator.weight.device
        return DecodingState.decoder_only(len(self.encoder.layers), device), [t.to(device) for t in inputs]

    def decode_step(self, state: DecodingState, tokens: Tensor, position: Tensor, edge_index: Tensor, group: Tensor):
        """Logits of the new nodes (n, V) and their attention weights per layer ``{"self"}``; a relative
        bias (T5 buckets, ALiBi) is computed on the new edges only, from the positions of both ends."""
        key_position = state.grow(position)  # (num_nodes,)
        x = self.embed_nodes(tokens, position)  # (n, d_model)
        bias = None
        if self.relative_bias is not None:
            bias = self.relative_bias(edge_index, position, key_position).to(x.dtype)  # (num_new_edges, H)
        hidden, weights = self.encoder(x, edge_index, bias, True, position=position, cache=state.cache)
        return self.generator(hidden), [{"self": w} for w in weights]


def paper_parts(vocab_size: int, d_model: int = 512, nhead: int = 8, num_layers: int = 6,
                dim_feedforward: int = 2048, dropout: float = 0.1, activation: str | Callable[[Tensor], Tensor] = "relu",
                layer_norm_eps: float = 1e-5, norm_first: bool = False, bias: bool = True, tie_weights: bool = False,
                device=None, dtype=None, *, backend: str = "reference") -> dict:
    r"""The paper's parts of a single-stack model, as keyword arguments of :class:`GraphSequenceModel`.

    A stack of ``num_layers`` :class:`GraphTransformerEncoderLayer` with a final LayerNorm (Xavier
    uniform weights), the token embedding scaled by :math:`\sqrt{d_\text{model}}`, sinusoidal
    positions, dropout and the output layer; ``tie_weights`` shares the embedding with the
    output layer.  Other arguments as :class:`torch.nn.TransformerEncoderLayer`.
    """
    factory = {"device": device, "dtype": dtype}
    layer = GraphTransformerEncoderLayer(
        d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, norm_first=norm_first, bias=bias,
        backend=backend, **factory,
    )
    norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
    encoder = GraphTransformerEncoder(layer, num_layers, norm)
    for parameter in encoder.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)
    embed = TokenEmbedding(vocab_size, d_model, **factory)
    positional = SinusoidalPositionalEncoding(d_model)
    generator = nn.Linear(d_model, vocab_size, bias=bias, **factory)
    if tie_weights:
        generator.weight = embed.embedding.weight
    return dict(embed=embed, encoder=encoder, generator=generator, positional=positional, dropout=dropout)


class GraphEncoderModel(GraphSequenceModel):
    """Encoder-only (BERT-like) model: the paper's parts on the complete graph of each sequence.

    A :class:`GraphSequenceModel` with ``graph=graphs.complete`` and :func:`paper_parts`;
    arguments as :class:`GraphTransformerModel` with one ``num_layers``, ``tie_weights``
    shares the embedding with the output layer.  Build inputs with
    ``graphs.sequence_data(tokens, "complete")`` and PyG's ``Batch``.  Any other graph works
    too: ``data.edge_index`` (and ``data.edge_bias``) may be one edge set or a list with
    one per layer, set on the collated batch, e.g.
    ``batch.edge_index = [patterns.strided(lengths, 4, part=p) for p in ("local", "strided")]``.
    """

    def __init__(self, vocab_size: int, d_model: int = 512, nhead: int = 8, num_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation="relu",
                 layer_norm_eps: float = 1e-5, norm_first: bool = False, bias: bool = True,
                 tie_weights: bool = False, device=None, dtype=None, *, backend: str = "reference") -> None:
        super().__init__(**paper_parts(vocab_size, d_model, nhead, num_layers, dim_feedforward, dropout, activation,
                                       layer_norm_eps, norm_first, bias, tie_weights, device, dtype, backend=backend),
                         graph=complete)


class GraphDecoderModel(GraphSequenceModel):
    """Decoder-only (GPT-like) model: the paper's parts (no cross-attention) on the causal graph.

    A :class:`GraphSequenceModel` with ``graph=graphs.causal`` and :func:`paper_parts`;
    arguments as :class:`GraphEncoderModel`.  Build inputs with
    ``graphs.sequence_data(tokens, "causal")`` and PyG's ``Batch``.
    """

    def __init__(self, vocab_size: int, d_model: int = 512, nhead: int = 8, num_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation="relu",
                 layer_norm_eps: float = 1e-5, norm_first: bool = False, bias: bool = True,
                 tie_weights: bool = False, device=None, dtype=None, *, backend: str = "reference") -> None:
        super().__init__(**paper_parts(vocab_size, d_model, nhead, num_layers, dim_feedforward, dropout, activation,
                                       layer_norm_eps, norm_first, bias, tie_weights, device, dtype, backend=backend),
                         graph=causal)
