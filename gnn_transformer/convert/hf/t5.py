r"""T5 (Raffel et al., arXiv:1910.10683) and T5 v1.1 as message passing with relative-position edge biases.

Pre-norm layers with RMSNorm (no bias, no mean subtraction; the mean square is computed in
float32 as the original does), no biases anywhere, and *unscaled* scores:

.. math::

    s_{ij}^h = \langle q_i^h, k_j^h \rangle + B\big[\text{bucket}(p_j - p_i), h\big]

where the bucket table :math:`B` is learned once per stack (in the original's first block) and
the same per-edge bias (num_edges, H) is passed to every layer of the stack: on the complete
graph of the encoder (bidirectional buckets) and on the causal graph of the decoder
(unidirectional buckets); cross-attention carries no bias.  The feed-forward is
:math:`\text{ReLU}(x W_i) W_o` (T5) or the gated :math:`(\text{GELU}_\text{tanh}(x W_{i0}) \odot x W_{i1}) W_o`
(v1.1, ``feed_forward_proj="gated-gelu"``).  ``num_heads * d_kv`` may differ from ``d_model``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...core.layers import GraphTransformerDecoderLayer, GraphTransformerEncoderLayer
from ...core.norms import RMSNorm
from ...core.stacks import GraphTransformerDecoder, GraphTransformerEncoder
from ...variants.biases import RelativePositionBias
from .common import PaddedPair, Seq2SeqGraphModel, WeightEntry, activation_name, per_layer_entries, tied


def t5_norm(d_model: int, eps: float, bias: bool = False, **factory) -> RMSNorm:
    """T5's layer norm: RMSNorm whose mean square is computed in float32."""
    return RMSNorm(d_model, eps, variance_dtype=torch.float32, **factory)


class GraphT5ForConditionalGeneration(Seq2SeqGraphModel):
    """``transformers.T5ForConditionalGeneration`` on token graphs; ``forward`` takes the original's call.

    Call: ``forward(input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
    labels=None)`` -> ``Seq2SeqLMOutput`` with ``logits`` (B, T, vocab); without
    ``decoder_input_ids`` the decoder reads the labels shifted right.
    """

    hf_classes = ("T5ForConditionalGeneration",)
    embedding_formula = "e_i = W[token_i]   (no absolute positions: relative ones are per-edge biases)"

    def __init__(self, model: nn.Module, *, backend: str = "reference") -> None:
        super().__init__()
        config = model.config
        d, heads = config.d_model, config.num_heads
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, d)
        self.dropout = nn.Dropout(config.dropout_rate)
        common = dict(dropout=config.dropout_rate, activation=activation_name(config.dense_act_fn),
                      layer_norm_eps=config.layer_norm_epsilon, norm_first=True, bias=False, norm=t5_norm,
                      gated=config.is_gated_act, attention_scale=1.0, head_dim=config.d_kv, backend=backend)
        final_norm = t5_norm(d, config.layer_norm_epsilon)
        self.encoder = GraphTransformerEncoder(GraphTransformerEncoderLayer(d, heads, config.d_ff, **common),
                                               config.num_layers, final_norm)
        self.decoder = GraphTransformerDecoder(GraphTransformerDecoderLayer(d, heads, config.d_ff, **common),
                                               config.num_decoder_layers, t5_norm(d, config.layer_norm_epsilon))
        buckets = (config.relative_attention_num_buckets, config.relative_attention_max_distance)
        self.encoder_bias = RelativePositionBias(heads, *buckets, bidirectional=True)
        self.decoder_bias = RelativePositionBias(heads, *buckets, bidirectional=False)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        if not (tied(model.encoder.embed_tokens, model.shared) and tied(model.decoder.embed_tokens, model.shared)):
            raise NotImplementedError("T5 whose encoder or decoder embedding is not the shared one is not supported")
        self.tie_weights = tied(model.lm_head, model.shared)
        if self.tie_weights:
            self.lm_head.weight = self.shared.weight
        self.output_scale = d ** -0.5 if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings) else 1.0

    def weight_map(self) -> list[WeightEntry]:
        gated = self.config.is_gated_act
        attention = [("in_proj_weight", ("q.weight", "k.weight", "v.weight")), ("out_proj.weight", "o.weight")]
        ff = [("linear1.weight", "DenseReluDense.wi_0.weight" if gated else "DenseReluDense.wi.weight"),
              ("linear2.weight", "DenseReluDense.wo.weight")] + \
            ([("linear_v.weight", "DenseReluDense.wi_1.weight")] if gated else [])
        entries = per_layer_entries("", "", [
            ("shared.weight", "shared.weight"),
            ("encoder.norm.weight", "encoder.final_layer_norm.weight"),
            ("decoder.norm.weight", "decoder.final_layer_norm.weight"),
            ("encoder_bias.relative_attention_bias.weight",
             "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            ("decoder_bias.relative_attention_bias.weight",
             "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        ])
        for i in range(len(self.encoder.layers)):
            entries += per_layer_entries(f"encoder.layers.{i}.", f"encoder.block.{i}.", [
                *[(f"self_attn.{g}", tuple(f"layer.0.SelfAttention.{n}" for n in (h if isinstance(h, tuple) else (h,))))
                  for g, h in attention],
                ("norm1.weight", "layer.0.layer_norm.weight"), ("norm2.weight", "layer.1.layer_norm.weight"),
                *[(g, f"layer.1.{h}") for g, h in ff]])
        for i in range(len(self.decoder.layers)):
            entries += per_layer_entries(f"decoder.layers.{i}.", f"decoder.block.{i}.", [
                *[(f"{mine}.{g}", tuple(f"layer.{k}.{theirs}.{n}" for n in (h if isinstance(h, tuple) else (h,))))
                  for mine, k, theirs in (("self_attn", 0, "SelfAttention"), ("multihead_attn", 1, "EncDecAttention"))
                  for g, h in attention],
                ("norm1.weight", "layer.0.layer_norm.weight"), ("norm2.weight", "layer.1.layer_norm.weight"),
                ("norm3.weight", "layer.2.layer_norm.weight"), *[(g, f"layer.2.{h}") for g, h in ff]])
        if not self.tie_weights:
            entries.append(WeightEntry("lm_head.weight", ("lm_head.weight",)))
        return entries

    def logits(self, pair: PaddedPair) -> tuple[Tensor, Tensor]:
        """Logits (B, T, vocab) and encoder output (B * S, d) of a padded pair (see :class:`Seq2SeqGraphModel`)."""
        b, _, t = pair.shape
        src = self.dropout(self.shared(pair.src_ids))  # (B * S, d)
        src_bias = self.encoder_bias(pair.src_edges, pair.src_position)  # (num_edges, H), shared by all layers
        memory = self.dropout(self.encoder(src, edge_index=pair.src_edges, edge_bias=src_bias))
        tgt = self.dropout(self.shared(pair.tgt_ids))  # (B * T, d)
        tgt_bias = self.decoder_bias(pair.tgt_edges, pair.tgt_position)
        out = self.decoder(tgt, memory, edge_index=pair.tgt_edges, cross_edge_index=pair.cross_edges,
                           edge_bias=tgt_bias)
        return self.lm_head(self.dropout(out) * self.output_scale).view(b, t, -1), memory  # (B, T, vocab)

    def encode_sources(self, tokens: Tensor, position: Tensor, edge_index: Tensor) -> Tensor:
        src = self.dropout(self.shared(tokens))  # (S, d)
        bias = self.encoder_bias(edge_index, position)  # (num_edges, H)
        return self.dropout(self.encoder(src, edge_index=edge_index, edge_bias=bias))

    def decoder_logits(self, state, tokens, position, key_position, edge_index, cross_edge_index):
        """The relative bias of the new edges only, from the new nodes' and their sources' positions."""
        tgt = self.dropout(self.shared(tokens))  # (n, d)
        bias = self.decoder_bias(edge_index, position, key_position)  # (num_new_edges, H)
        out, weights = self.decoder(tgt, state.memory, edge_index, cross_edge_index, bias, None, True,
                                    position=position, cache=state.cache)
        return self.lm_head(self.dropout(out) * self.output_scale), weights  # (n, vocab)
