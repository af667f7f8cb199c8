r"""BART (Lewis et al., arXiv:1910.13461) as message passing on complete, causal and bipartite graphs.

.. math::

    h^0_i = \text{LN}_e\big(s\,W[t_i] + P[p_i + 2]\big)

(:math:`s = \sqrt{d}` with ``scale_embedding``, else 1; BART's position table keeps two extra rows
in front, hence the offset 2), then post-norm encoder layers on the complete graph of the real
source tokens and post-norm decoder layers on the causal graph of the target (keys limited by
``decoder_attention_mask``) and on the bipartite graph from the real source tokens.
:math:`\text{logits}_i = h_i W^\top + b_\text{final}` with the shared embedding :math:`W`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...core.layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer
from ...core.stacks import GraphTransformerDecoder, GraphTransformerEncoder
from ...variants.models import LearnedPositionalEmbedding
from .common import PaddedPair, Seq2SeqGraphModel, WeightEntry, activation_name, per_layer_entries, tied

_ATTENTION = [("in_proj_weight", tuple(f"{n}_proj.weight" for n in "qkv")),
              ("in_proj_bias", tuple(f"{n}_proj.bias" for n in "qkv")),
              ("out_proj.weight", "out_proj.weight"), ("out_proj.bias", "out_proj.bias")]


def _prefixed(graph: str, hf: str, pairs) -> list[tuple]:
    return [(graph + g, tuple(hf + n for n in h) if isinstance(h, tuple) else hf + h) for g, h in pairs]


class GraphBartForConditionalGeneration(Seq2SeqGraphModel):
    """``transformers.BartForConditionalGeneration`` on token graphs; ``forward`` takes the original's call.

    Call: ``forward(input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
    labels=None)`` -> ``Seq2SeqLMOutput`` with ``logits`` (B, T, vocab).  Without
    ``decoder_input_ids`` the decoder reads the labels (or else ``input_ids``) shifted right, as
    the original does.
    """

    hf_classes = ("BartForConditionalGeneration",)
    hf_buffers = ("final_logits_bias",)
    shift_input_ids = True
    input_positions = ("encoder_positions", "decoder_positions")
    embedding_formula = "e_i = W[token_i]   (× √d_model with scale_embedding, then + P_i and layernorm_embedding)"

    def __init__(self, model: nn.Module, *, backend: str = "reference") -> None:
        super().__init__()
        config = model.config
        d = config.d_model
        self.config = config
        self.embed_scale = math.sqrt(d) if config.scale_embedding else 1.0
        self.shared = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        rows = model.model.encoder.embed_positions.num_embeddings
        self.encoder_positions = LearnedPositionalEmbedding(rows, d, offset=2)
        self.decoder_positions = LearnedPositionalEmbedding(rows, d, offset=2)
        self.encoder_embedding_norm, self.decoder_embedding_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        common = dict(dropout=config.dropout, activation=activation_name(config.activation_function),
                      norm_first=False, backend=backend)
        encoder_layer = GraphTransformerEncoderLayer(d, config.encoder_attention_heads, config.encoder_ffn_dim,
                                                     **common)
        decoder_layer = GraphTransformerDecoderLayer(d, config.decoder_attention_heads, config.decoder_ffn_dim,
                                                     **common)
        for layer in (encoder_layer, decoder_layer):
            layer.self_attn.dropout, layer.dropout.p = config.attention_dropout, config.activation_dropout
        decoder_layer.multihead_attn.dropout = config.attention_dropout
        self.encoder = GraphTransformerEncoder(encoder_layer, config.encoder_layers)
        self.decoder = GraphTransformerDecoder(decoder_layer, config.decoder_layers)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        bart = model.model
        if not (tied(bart.encoder.embed_tokens, bart.shared) and tied(bart.decoder.embed_tokens, bart.shared)):
            raise NotImplementedError("BART whose encoder or decoder embedding is not the shared one is not supported")
        self.tie_weights = tied(model.lm_head, bart.shared)
        if self.tie_weights:
            self.lm_head.weight = self.shared.weight

    def weight_map(self) -> list[WeightEntry]:
        pairs = [("shared.weight", "model.shared.weight"), ("final_logits_bias", "final_logits_bias")]
        for side in ("encoder", "decoder"):
            pairs += [(f"{side}_positions.weight", f"model.{side}.embed_positions.weight"),
                      (f"{side}_embedding_norm.weight", f"model.{side}.layernorm_embedding.weight"),
                      (f"{side}_embedding_norm.bias", f"model.{side}.layernorm_embedding.bias")]
        entries = per_layer_entries("", "", pairs)
        norms = [("norm1", "self_attn_layer_norm"), ("norm2", "final_layer_norm")]
        for i in range(len(self.encoder.layers)):
            entries += per_layer_entries(f"encoder.layers.{i}.", f"model.encoder.layers.{i}.", [
                *_prefixed("self_attn.", "self_attn.", _ATTENTION), *_feed_forward(), *_norms(norms)])
        norms = [("norm1", "self_attn_layer_norm"), ("norm2", "encoder_attn_layer_norm"), ("norm3", "final_layer_norm")]
        for i in range(len(self.decoder.layers)):
            entries += per_layer_entries(f"decoder.layers.{i}.", f"model.decoder.layers.{i}.", [
                *_prefixed("self_attn.", "self_attn.", _ATTENTION),
                *_prefixed("multihead_attn.", "encoder_attn.", _ATTENTION), *_feed_forward(), *_norms(norms)])
        if not self.tie_weights:
            entries.append(WeightEntry("lm_head.weight", ("lm_head.weight",)))
        return entries

    def _embed(self, tokens: Tensor, positions: nn.Module, norm: nn.Module, position: Tensor) -> Tensor:
        x = self.shared(tokens) * self.embed_scale + positions(position)  # (B * L, d)
        return self.dropout(norm(x))

    def logits(self, pair: PaddedPair) -> tuple[Tensor, Tensor]:
        """Logits (B, T, vocab) and encoder output (B * S, d) of a padded pair (see :class:`Seq2SeqGraphModel`)."""
        b, _, t = pair.shape
        src = self._embed(pair.src_ids, self.encoder_positions, self.encoder_embedding_norm, pair.src_position)
        memory = self.encoder(src, edge_index=pair.src_edges)
        tgt = self._embed(pair.tgt_ids, self.decoder_positions, self.decoder_embedding_norm, pair.tgt_position)
        out = self.decoder(tgt, memory, edge_index=pair.tgt_edges, cross_edge_index=pair.cross_edges)
        return (self.lm_head(out) + self.final_logits_bias).view(b, t, -1), memory  # (B, T, vocab)

    def encode_sources(self, tokens: Tensor, position: Tensor, edge_index: Tensor) -> Tensor:
        src = self._embed(tokens, self.encoder_positions, self.encoder_embedding_norm, position)  # (S, d)
        return self.encoder(src, edge_index=edge_index)

    def decoder_logits(self, state, tokens, position, key_position, edge_index, cross_edge_index):
        tgt = self._embed(tokens, self.decoder_positions, self.decoder_embedding_norm, position)  # (n, d)
        out, weights = self.decoder(tgt, state.memory, edge_index, cross_edge_index, None, None, True,
                                    position=position, cache=state.cache)
        return self.lm_head(out) + self.final_logits_bias[0], weights  # (n, vocab)


def _feed_forward() -> list[tuple]:
    return [("linear1.weight", "fc1.weight"), ("linear1.bias", "fc1.bias"),
            ("linear2.weight", "fc2.weight"), ("linear2.bias", "fc2.bias")]


def _norms(pairs) -> list[tuple]:
    return [(f"{g}.{p}", f"{h}.{p}") for g, h in pairs for p in ("weight", "bias")]
